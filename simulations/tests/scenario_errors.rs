//! Scenario files fail loudly and name the offending field.

use quorate_sim::{Scenario, SimError};

const GOOD: &str = r#"
name = "ok"
[committee]
n = 5
threshold = 3
[workload]
kind = "fixed-rate"
"#;

fn error(text: &str) -> String {
    match Scenario::from_toml(text, "test.toml") {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn good_scenario_parses() {
    let s = Scenario::from_toml(GOOD, "test.toml").expect("valid");
    assert_eq!(s.max_attempts(), 3);
}

#[test]
fn typo_in_a_field_is_named() {
    let e = error(&GOOD.replace("threshold = 3", "treshold = 3"));
    assert!(e.contains("treshold"), "{e}");
    let e = error(&format!(
        "{GOOD}[network]\nlatnecy = {{ dist = \"constant\", ms = 5 }}\n"
    ));
    assert!(e.contains("latnecy"), "{e}");
    let e = error(&format!(
        "{GOOD}[network]\nlatency = {{ dist = \"constant\", msec = 5 }}\n"
    ));
    assert!(e.contains("msec"), "{e}");
    let e = error(&format!(
        "{GOOD}[byzantine]\nbehaviour = \"invalid-shares\"\n"
    ));
    assert!(e.contains("invalid-shares"), "{e}");
}

#[test]
fn inconsistent_values_name_the_field() {
    let e = error(&GOOD.replace("threshold = 3", "threshold = 6"));
    assert!(e.contains("committee.threshold"), "{e}");
    let e = error(&format!("{GOOD}[network]\nloss = 1.5\n"));
    assert!(e.contains("network.loss"), "{e}");
    let e = error(&format!(
        "{GOOD}[[network.partitions]]\nstart_s = 1.0\na = [\"n9\"]\nb = [\"coordinator\"]\n"
    ));
    assert!(e.contains("n9"), "{e}");
    assert!(matches!(
        Scenario::from_toml(&GOOD.replace("n = 5", "n = 1"), "t"),
        Err(SimError::Invalid { .. })
    ));
}
