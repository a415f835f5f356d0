//! `[input]`: how log lines are read.

use super::{ConfigError, RawInput};

const INPUT: &str = "input";

/// How log lines are read.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSettings {
    /// An HTTP status at or above this counts as an error (when the line has no explicit
    /// `error` flag).
    pub error_status_min: u16,
}

impl Default for InputSettings {
    fn default() -> Self {
        InputSettings {
            error_status_min: 500,
        }
    }
}

impl RawInput {
    pub fn validate(self) -> Result<InputSettings, ConfigError> {
        let d = InputSettings::default();
        let error_status_min = match self.error_status_min {
            None => d.error_status_min,
            Some(n) if (100..=599).contains(&n) => n as u16,
            Some(n) => {
                return Err(ConfigError::invalid(
                    INPUT,
                    "error_status_min",
                    format!("must be an HTTP status from 100 to 599, got {n}"),
                ))
            }
        };
        Ok(InputSettings { error_status_min })
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use crate::config::testing::err;

    #[test]
    fn error_status_is_an_http_status() {
        expect!["[input] error_status_min must be an HTTP status from 100 to 599, got 700"]
            .assert_eq(&err("[input]\nerror_status_min = 700"));
    }
}
