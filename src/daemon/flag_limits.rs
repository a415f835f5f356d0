//! The bounds on turning feature flags off (`[daemon.flag_off]`), pure: the allow-list, at most
//! `max_per_hour` in any hour, and a cool-down per flag. The supervisor holds the record of
//! what was turned off (shadow mode's would-be actions included, so shadow shows what the real
//! thing would do), seeded at start from the store, so a restart forgets none of it.

use std::fmt;

use crate::config::FlagOffSettings;

/// Why a flag is not turned off now. Its text is the answer a caller and the audit trail get.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// `[daemon.flag_off]` is not configured.
    NotConfigured,
    /// The flag is not on the allow-list.
    NotAllowed { flag: String, globs: Vec<String> },
    /// `max_per_hour` flags were turned off in the last hour; the next may go in `retry_after`
    /// seconds.
    RateLimited { max: u32, retry_after: u64 },
    /// The same flag was turned off `ago` seconds ago, within the cool-down.
    CoolingDown {
        flag: String,
        ago: u64,
        retry_after: u64,
    },
    /// A remediation is under way (its recovery check would judge two actions at once).
    Busy(String),
    /// A change is being watched: a flag turned off now would change what it is judged on
    /// (the agent could hide its own change's harm, or make a person's look bad).
    Watching(String),
    /// The caller's role may not ask.
    Role(String),
}

impl Refusal {
    /// Seconds after which asking again may succeed, when waiting helps.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Refusal::RateLimited { retry_after, .. } | Refusal::CoolingDown { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// A short word for the record and the track record ("not_allowed", "rate_limited", ...).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotConfigured => "not_configured",
            Refusal::NotAllowed { .. } => "not_allowed",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::CoolingDown { .. } => "cooling_down",
            Refusal::Busy(_) => "busy",
            Refusal::Watching(_) => "watching",
            Refusal::Role(_) => "role",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotConfigured => f.write_str(
                "flag_off is not configured: guardian turns no flags off without a \
                 [daemon.flag_off] section",
            ),
            Refusal::NotAllowed { flag, globs } => write!(
                f,
                "flag {flag:?} is not on the allow-list ([daemon.flag_off] flags = {globs:?}): \
                 guardian turns no other flag off"
            ),
            Refusal::RateLimited { max, retry_after } => write!(
                f,
                "the rate limit is spent: {max} flag(s) turned off in the last hour \
                 ([daemon.flag_off] max_per_hour = {max}); the next may go in {retry_after} s"
            ),
            Refusal::CoolingDown {
                flag,
                ago,
                retry_after,
            } => write!(
                f,
                "flag {flag:?} was turned off {ago} s ago and is cooling down \
                 ([daemon.flag_off] cooldown_secs); it may be turned off again in {retry_after} s"
            ),
            Refusal::Busy(what) => write!(
                f,
                "a remediation of {what} is under way; its recovery check must not judge two \
                 actions at once: ask again once it is done"
            ),
            Refusal::Watching(change) => write!(
                f,
                "change {change} is being watched: a flag turned off now would change what it \
                 is judged on; if it is doing harm guardian turns its flag off or reverts it \
                 itself, and a flag may be asked for once its watch ends (guardian status)"
            ),
            Refusal::Role(why) => f.write_str(why),
        }
    }
}

/// When each flag was turned off, as far back as the bounds look.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlagLedger {
    turned_off: Vec<(f64, String)>,
}

impl FlagLedger {
    /// The record as stored: `(when, flag)` of each flag turned off (or would have been).
    pub fn new(mut turned_off: Vec<(f64, String)>) -> FlagLedger {
        turned_off.sort_by(|a, b| a.0.total_cmp(&b.0));
        FlagLedger { turned_off }
    }

    /// Whether `flag` may be turned off at `now`, and if not why.
    pub fn check(&self, flag: &str, now: f64, settings: &FlagOffSettings) -> Result<(), Refusal> {
        if !settings.flags.allows(flag) {
            return Err(Refusal::NotAllowed {
                flag: flag.to_owned(),
                globs: settings.flags.globs().to_vec(),
            });
        }
        let cooldown = f64::from(settings.cooldown_secs);
        if let Some((at, _)) = self
            .turned_off
            .iter()
            .rev()
            .find(|(at, f)| f == flag && now - at < cooldown)
        {
            return Err(Refusal::CoolingDown {
                flag: flag.to_owned(),
                ago: (now - at).max(0.0) as u64,
                retry_after: (at + cooldown - now).ceil().max(1.0) as u64,
            });
        }
        let in_the_hour: Vec<f64> = self
            .turned_off
            .iter()
            .map(|(at, _)| *at)
            .filter(|at| now - at < 3600.0)
            .collect();
        if in_the_hour.len() >= settings.max_per_hour as usize {
            let oldest = in_the_hour.iter().copied().fold(f64::INFINITY, f64::min);
            return Err(Refusal::RateLimited {
                max: settings.max_per_hour,
                retry_after: (oldest + 3600.0 - now).ceil().max(1.0) as u64,
            });
        }
        Ok(())
    }

    /// `flag` was turned off (or would have been, in shadow) at `now`.
    pub fn record(&mut self, flag: &str, now: f64) {
        // Nothing older than a day bounds anything (the cool-down is at most a day).
        self.turned_off.retain(|(at, _)| now - at < 86_400.0);
        self.turned_off.push((now, flag.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn settings(extra: &str) -> FlagOffSettings {
        Config::parse(&format!(
            "[daemon]\n[daemon.flag_off]\nfile = \"/f.json\"\nflags = [\"checkout-*\"]\n{extra}"
        ))
        .unwrap()
        .daemon
        .unwrap()
        .flag_off
        .unwrap()
    }

    #[test]
    fn only_allowed_flags_within_the_hourly_limit_and_the_cooldown() {
        let s = settings("max_per_hour = 2\ncooldown_secs = 600\n");
        let mut l = FlagLedger::default();
        assert_eq!(
            l.check("billing", 0.0, &s).unwrap_err().code(),
            "not_allowed"
        );
        assert!(l.check("checkout-a", 0.0, &s).is_ok());
        l.record("checkout-a", 0.0);
        let cooling = l.check("checkout-a", 100.0, &s).unwrap_err();
        assert_eq!(cooling.retry_after(), Some(500));
        assert!(l.check("checkout-a", 600.0, &s).is_ok(), "cooled down");
        l.record("checkout-b", 10.0);
        let limited = l.check("checkout-c", 20.0, &s).unwrap_err();
        assert_eq!(limited.code(), "rate_limited");
        assert_eq!(limited.retry_after(), Some(3580));
        assert_eq!(
            limited.to_string(),
            "the rate limit is spent: 2 flag(s) turned off in the last hour ([daemon.flag_off] \
             max_per_hour = 2); the next may go in 3580 s"
        );
        assert!(l.check("checkout-c", 3600.0, &s).is_ok(), "an hour later");
    }
}
