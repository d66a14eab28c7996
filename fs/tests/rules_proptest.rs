//! Property tests of `corral_core::permissions` (kept here, where proptest is a dependency):
//! no pattern or path makes compiling or evaluating panic, and the documented invariants hold.

use corral_core::permissions::{PatternType, Permission, PermissionRule, Rules};
use proptest::prelude::*;

/// Patterns and paths from an alphabet rich in glob syntax.
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("*"),
            Just("**"),
            Just("?"),
            Just("["),
            Just("]"),
            Just("!"),
            Just("^"),
            Just("-"),
            Just("\\"),
            Just("/"),
            Just("."),
            Just(".."),
            Just("a"),
            Just("b"),
            Just("é"),
            Just(".env"),
            Just("secrets"),
        ],
        0..max,
    )
    .prop_map(|parts| parts.concat())
}

fn permission() -> impl Strategy<Value = Permission> {
    prop_oneof![Just(Permission::None), Just(Permission::View), Just(Permission::Read), Just(Permission::Write)]
}

fn kind() -> impl Strategy<Value = PatternType> {
    prop_oneof![Just(PatternType::Glob), Just(PatternType::Directory), Just(PatternType::File)]
}

fn rule() -> impl Strategy<Value = PermissionRule> {
    (text(12), permission(), kind(), -3i32..3).prop_map(|(p, perm, k, prio)| PermissionRule::new(p, perm, k, prio))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn eval_never_panics(rules in proptest::collection::vec(rule(), 0..6), path in text(10), is_dir: bool) {
        if let Ok(compiled) = Rules::compile(&rules) {
            let p = compiled.eval(&path, is_dir);
            prop_assert!(compiled.eval("", true) >= Permission::View);
            // Whatever the caller's slashes, the same answer as the tidy path.
            let tidy: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            prop_assert_eq!(compiled.eval(&tidy.join("/"), is_dir), p);
        }
    }

    #[test]
    fn cli_parsing_never_panics(s in text(16), spec in "[a-z:=0-9-]{0,20}") {
        let _ = PermissionRule::parse_cli(&s);
        let _ = PermissionRule::parse_cli(&format!("{s}={spec}"));
    }

    #[test]
    fn a_later_equal_rule_wins(pattern in text(8), first in permission(), second in permission(), path in text(8)) {
        let rules = [PermissionRule::new(pattern.clone(), first, PatternType::Glob, 0),
                     PermissionRule::new(pattern, second, PatternType::Glob, 0)];
        if let Ok(both) = Rules::compile(&rules) {
            let only_second = Rules::compile(&rules[1..]).unwrap();
            prop_assert_eq!(both.eval(&path, false), only_second.eval(&path, false));
        }
    }
}
