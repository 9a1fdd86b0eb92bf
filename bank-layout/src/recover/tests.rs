//! Unit tests of `recover`.

use super::*;

#[test]
fn notes_are_one_line() {
    let notes = [
        Recovery::BankRecreated {
            bank: BankId::Bank1,
        },
        Recovery::HalfStagedWiped {
            bank: BankId::Bank2,
        },
        Recovery::StateRebuilt {
            active: BankId::Bank2,
        },
        Recovery::FellBack {
            from: BankId::Bank1,
            to: BankId::Bank2,
            reason: "Bank1 was deleted".into(),
        },
        Recovery::ActiveEmpty {
            bank: BankId::Bank1,
            reason: "Bank1 is empty".into(),
        },
        Recovery::VersionCorrected {
            bank: BankId::Bank2,
            listed: Some("1.0.0".into()),
            actual: None,
        },
        Recovery::TempFilesRemoved { count: 2 },
    ];
    for note in notes {
        let text = note.to_string();
        assert!(!text.is_empty() && !text.contains('\n'), "{text}");
    }
    assert_eq!(
        Recovery::HalfStagedWiped {
            bank: BankId::Bank2
        }
        .to_string(),
        "wiped half-staged Bank2"
    );
}

#[test]
fn rebuild_picks_the_highest_sequence() {
    let rec = |sequence| {
        Some(BankRecord {
            sequence,
            ..BankRecord::default()
        })
    };
    assert_eq!(rebuild(&[rec(3), rec(4)]).active, BankId::Bank2);
    assert_eq!(rebuild(&[rec(5), rec(4)]).active, BankId::Bank1);
    assert_eq!(rebuild(&[None, rec(1)]).active, BankId::Bank2);
    assert_eq!(rebuild(&[None, None]).active, BankId::Bank1);
}
