//! Readers for recorded traffic: JSON lines and nginx access logs.
