//! The configuration file as the CLI reads it.

use super::common::*;

fn with_config(text: &str, events: &str) -> std::process::Output {
    let (_dir, config) = temp_file("guardian.toml", text);
    guardian(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--events",
        sample(events).to_str().unwrap(),
        "--change-at",
        "1764000000",
        "--json",
    ])
}

#[test]
fn an_unknown_key_is_bad_input_naming_the_key_and_file() {
    let out = with_config(
        "[detector]\nalpha = 0.01\nwatch_seconds = 600\n",
        "bad_deploy.jsonl",
    );
    assert_eq!(code(&out), 2);
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(err.contains("guardian.toml: "), "{err}");
    assert!(err.contains("unknown field `watch_seconds`"), "{err}");
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn a_value_out_of_range_is_bad_input_saying_what_is_wrong() {
    let out = with_config("[detector]\nalpha = 1.5\n", "bad_deploy.jsonl");
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("guardian.toml: [detector] alpha must be in (0, 0.5), got 1.5"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_config_is_bad_input() {
    let out = guardian(&[
        "replay",
        "--config",
        "/no/such/guardian.toml",
        "--events",
        sample("bad_deploy.jsonl").to_str().unwrap(),
        "--change-at",
        "1764000000",
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("cannot read /no/such/guardian.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_settings_reach_the_detector() {
    // A 10-minute watch window calls the healthy sample healthy 10 minutes after the change.
    let out = with_config("[detector]\nwatch_secs = 600\n", "healthy_deploy.jsonl");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["decided_at"], CHANGE_AT + 600.0);
    // Counting every /api/products 404 as an error turns the healthy sample's steady 404s
    // into part of the baseline rate: still healthy, with a higher error rate on both sides.
    let out = with_config("[input]\nerror_status_min = 400\n", "healthy_deploy.jsonl");
    let v = json(&out);
    let rate = v["signals"][0]["baseline"]["rate"].as_f64().unwrap();
    assert!(rate > 0.015, "{rate}");
}
