//! The emails about proposals: asking for approval, and telling of a failed deploy.

use crate::daemon::engine::{Engine, EngineError};
use crate::gate::proposals::ProposalRecord;

impl Engine {
    /// Queues an email about a proposal (when mail is configured), with its own Message-ID;
    /// `links` are the approval links whose placeholders the body holds.
    pub(super) fn mail_proposal(
        &mut self,
        id: &str,
        what: &str,
        subject: String,
        body: String,
        links: &[String],
        now: f64,
    ) -> Result<(), EngineError> {
        let Some(mail) = self.settings.mail.clone() else {
            return Ok(());
        };
        let text = format!(
            "{body}\n-- \nSent by guardian, watching {}.\n",
            self.settings.service
        );
        let email = crate::report::Email {
            subject,
            text_body: self.with_checkpoint(&text, now)?,
            message_id: format!("<{id}.{what}@guardian>"),
            html: None,
        };
        crate::report::enqueue_with_links(&mut self.store, &mail, None, &email, links, now)?;
        Ok(())
    }

    /// Asks the approvers (the alert recipients) to look at a proposal that needs a person.
    pub(super) fn ask_for_approval(
        &mut self,
        p: &ProposalRecord,
        now: f64,
    ) -> Result<(), EngineError> {
        let subject = format!(
            "[guardian] {}: approval needed for {} ({}) — {}",
            self.settings.service,
            p.id,
            p.pattern,
            first_line(&p.summary)
        );
        let to_daemon = self.cli_options();
        let body = format!(
            "A change written by {} waits for a person's decision.\n\n{}\n\
             To see the diff:   guardian proposals {} {to_daemon}\n\
             To approve it:     guardian approve {} --diff {} {to_daemon}\n\
             To reject it:      guardian reject {} --why \"...\" {to_daemon}\n\
             Or on the status page (sign in with your token): {}/\n\
             The approval binds to this diff (sha256 {}); a changed diff needs a new one.\n",
            p.kind,
            proposal_text(p),
            p.id,
            p.id,
            p.diff_hash,
            p.id,
            self.reached_at(),
            p.diff_hash
        );
        let (links, ids) = match self.settings.gate.as_ref().and_then(|g| {
            g.approval_base_url
                .clone()
                .map(|url| (url, g.approval_link_secs))
        }) {
            Some((url, secs)) => {
                use crate::gate::links::placeholder;
                let expires = now + f64::from(secs);
                let (approve, reject) = self.store.create_approval_links(
                    &self.link_key,
                    &p.id,
                    &p.diff_hash,
                    expires,
                )?;
                let text = format!(
                    "\nOr with one click (each link works once, for this diff only, until {}):\n  \
                     approve: {url}/v1/links/{}\n  reject:  {url}/v1/links/{}\n",
                    crate::report::units::when(expires),
                    placeholder(&approve),
                    placeholder(&reject)
                );
                (text, vec![approve, reject])
            }
            None => (String::new(), Vec::new()),
        };
        self.mail_proposal(&p.id, "approval_needed", subject, body + &links, &ids, now)
    }
}

impl Engine {
    /// The daemon as people reach it: the approval links' `approval_base_url`, else the
    /// address it listens on (loopback for an unspecified one). The API's and the status
    /// page's base.
    pub(in crate::daemon::engine) fn reached_at(&self) -> String {
        let gate = self.settings.gate.as_ref();
        match gate.and_then(|g| g.approval_base_url.as_deref()) {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let mut addr = self.serving_at.unwrap_or(self.settings.listen);
                if addr.ip().is_unspecified() {
                    addr.set_ip(match addr.ip() {
                        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    });
                }
                format!("http://{addr}")
            }
        }
    }

    /// The options that make a person's `guardian` command reach this daemon, so the commands
    /// in an email can be pasted as they are: `--api`, the API as people reach it (the links'
    /// `approval_base_url`, else the address it listens on, loopback for an unspecified one),
    /// and `--token-file`, the approver's when there is one, a placeholder when there are
    /// several (the email goes to them all).
    pub(super) fn cli_options(&self) -> String {
        let gate = self.settings.gate.as_ref();
        let api = self.reached_at();
        let token = match gate.map(|g| &g.approvers[..]) {
            Some([(_, file)]) => crate::report::text::shell_line(&[file.display().to_string()]),
            _ => "<your token file>".to_owned(),
        };
        format!(
            "--api {} --token-file {token}",
            crate::report::text::shell_line(&[api])
        )
    }
}

/// A proposal in plain text: the decision and its reasons, the risk factors, the diff's size.
pub(super) fn proposal_text(p: &ProposalRecord) -> String {
    use crate::display::line;
    let mut out = format!(
        "Proposal:  {}\nPattern:   {} (proposed by {})\nSummary:   {}\nDecision:  {}{}\n",
        p.id,
        line(&p.pattern),
        line(&p.proposer),
        line(&p.summary),
        p.decision,
        if p.shadow { " (shadow mode)" } else { "" }
    );
    if let Some(url) = &p.issue_url {
        out.push_str(&format!("Issue:     {}\n", line(url)));
    }
    if let Some(issue) = &p.sentry_issue {
        out.push_str(&format!(
            "Fixes:     Sentry issue {} (judged on it once deployed: still firing makes it \
             ineffective)\n",
            line(issue)
        ));
    }
    if let Some(flag) = &p.flag {
        out.push_str(&format!(
            "Flag:      {} (if the change makes things worse, guardian turns this flag off \
             first)\n",
            line(flag)
        ));
    }
    let a = match crate::api::assessment(p) {
        Ok(a) => a,
        Err(e) => {
            out.push_str(&format!(
                "The assessment stored with it cannot be read: {e}\n"
            ));
            return out;
        }
    };
    for rule in &a.rules {
        out.push_str(&format!(
            "  - {} ({}): {}\n",
            line(&rule.rule),
            rule.effect.as_str(),
            line(&rule.message)
        ));
    }
    out.push_str(&format!("Risk:      {}/100\n", a.risk.score));
    for f in &a.risk.factors {
        out.push_str(&format!(
            "  {:>+4}  {}: {}\n",
            f.points,
            line(&f.name),
            line(&f.why)
        ));
    }
    let paths: Vec<_> = a.facts.paths.iter().map(|p| line(p)).collect();
    out.push_str(&format!(
        "Diff:      {} file(s), +{} -{}: {}\n",
        a.facts.files,
        a.facts.lines_added,
        a.facts.lines_removed,
        paths.join(", ")
    ));
    out
}

/// The first line of a summary, shown safely (summaries stored before they had to be one line
/// may hold several, and control characters).
pub(super) fn first_line(text: &str) -> String {
    crate::display::line(text.lines().next().unwrap_or_default().trim()).into_owned()
}
