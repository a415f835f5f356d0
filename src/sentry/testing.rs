//! What the Sentry tests share: the deliveries checked in under `testdata/sentry/`, shaped as
//! Sentry documents them.

/// The body of the checked-in delivery `name`.
pub fn payload(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/sentry")
            .join(name),
    )
    .unwrap()
}
