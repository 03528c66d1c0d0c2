//! Unit tests of the budget: its arithmetic, its window, and a model
//! that every sequence of deposits, withdrawals and give-backs must match.

use super::*;
use std::sync::Arc;

#[tokio::test(start_paused = true)]
async fn the_reserve_alone_allows_min_per_second_times_ttl() {
    let budget = RetryBudget::new(Duration::from_secs(10), 2, 0.2).unwrap();
    assert_eq!((0..100).filter(|_| budget.withdraw()).count(), 20);
}

#[tokio::test(start_paused = true)]
async fn deposits_after_a_quiet_spell_count_in_the_current_window() {
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
    budget.deposit();
    tokio::time::advance(Duration::from_secs(20)).await;
    for _ in 0..4 {
        budget.deposit();
    }
    assert_eq!((0..10).filter(|_| budget.withdraw()).count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_withdrawal_given_back_frees_the_retry_until_its_slot_expires() {
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 1.0).unwrap();
    budget.deposit();
    let withdrawal = budget.withdraw_retry().unwrap();
    assert!(!budget.withdraw());
    budget.give_back(withdrawal);
    let withdrawal = budget.withdraw_retry().unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    budget.give_back(withdrawal); // expired: nothing to give back
    budget.deposit();
    assert!(budget.withdraw());
    assert!(!budget.withdraw());
}

#[tokio::test(start_paused = true)]
async fn the_floor_is_a_minimum_not_an_addition() {
    let budget = RetryBudget::new(Duration::from_secs(10), 1, 0.1).unwrap();
    for _ in 0..1000 {
        budget.deposit();
    }
    assert_eq!((0..1000).filter(|_| budget.withdraw()).count(), 100);
}

#[tokio::test(start_paused = true)]
async fn deposits_and_withdrawals_expire_after_the_ttl() {
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
    for _ in 0..10 {
        budget.deposit();
    }
    assert_eq!((0..10).filter(|_| budget.withdraw()).count(), 5);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(!budget.withdraw(), "the deposits expired");
    for _ in 0..4 {
        budget.deposit();
    }
    assert_eq!(
        (0..10).filter(|_| budget.withdraw()).count(),
        2,
        "old withdrawals expired too"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fraction_below_one_is_exact() {
    // tower#857: 0.6 was truncated to 1.0 there.
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.6).unwrap();
    for _ in 0..10 {
        budget.deposit();
    }
    assert_eq!((0..10).filter(|_| budget.withdraw()).count(), 6);
}

#[test]
fn concurrent_withdrawals_never_overdraw() {
    let budget = Arc::new(RetryBudget::new(Duration::from_secs(60), 0, 1.0).unwrap());
    for _ in 0..1000 {
        budget.deposit();
    }
    let granted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let budget = Arc::clone(&budget);
                s.spawn(move || (0..1000).filter(|_| budget.withdraw()).count())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(granted, 1000);
}

#[test]
fn bad_settings_are_refused() {
    assert!(RetryBudget::new(Duration::from_millis(500), 1, 0.1).is_err());
    assert!(RetryBudget::new(Duration::from_secs(61), 1, 0.1).is_err());
    assert!(RetryBudget::new(Duration::from_secs(10), 1, f64::NAN).is_err());
    assert!(RetryBudget::new(Duration::from_secs(10), 1, -0.1).is_err());
}

#[test]
fn unlimited_never_denies() {
    let budget = RetryBudget::unlimited();
    assert!((0..10_000).all(|_| budget.withdraw()));
    assert_eq!(budget.remaining(), u64::MAX);
}

#[tokio::test(start_paused = true)]
async fn has_room_agrees_with_withdraw() {
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
    for _ in 0..4 {
        budget.deposit();
    }
    while budget.has_room() {
        assert!(budget.withdraw());
    }
    assert!(!budget.withdraw());
}

#[test]
fn the_parameters_read_back() {
    let budget = RetryBudget::new(Duration::from_secs(30), 2, 0.15).unwrap();
    assert_eq!(
        (budget.ttl(), budget.min_per_second(), budget.ratio()),
        (Duration::from_secs(30), 2, 0.15)
    );
    let fresh = budget.fresh();
    assert_eq!(
        (fresh.ttl(), fresh.min_per_second(), fresh.ratio()),
        (Duration::from_secs(30), 2, 0.15)
    );
}

/// What the model and the budget are asked to do.
#[derive(Clone, Debug)]
enum Op {
    Deposit,
    Withdraw,
    /// Gives back the held withdrawal at this index (modulo their number).
    GiveBack(usize),
    /// Lets this many milliseconds pass.
    Advance(u64),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => Just(Op::Deposit),
        4 => Just(Op::Withdraw),
        2 => any::<usize>().prop_map(Op::GiveBack),
        1 => (0u64..4000).prop_map(Op::Advance),
    ]
}

/// The budget's rule written plainly: counts per slot epoch; a window of
/// the last ten slots; a give-back removes its withdrawal from the slot it
/// was counted in, which no longer matters once that slot has left the
/// window.
#[derive(Default)]
struct Model {
    deposits: std::collections::BTreeMap<u64, u64>,
    withdrawals: std::collections::BTreeMap<u64, u64>,
}

impl Model {
    fn in_window(map: &std::collections::BTreeMap<u64, u64>, epoch: u64) -> u64 {
        let oldest = epoch.saturating_sub(SLOTS as u64 - 1);
        map.range(oldest..=epoch).map(|(_, n)| n).sum()
    }

    fn allowed(&self, epoch: u64, ratio: f64, reserve: f64) -> f64 {
        (Self::in_window(&self.deposits, epoch) as f64 * ratio).max(reserve)
    }
}

fn model_matches_the_budget(
    ttl_secs: u64,
    min_per_second: u32,
    ratio: f64,
    ops: Vec<Op>,
) -> Result<(), proptest::test_runner::TestCaseError> {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let ttl = Duration::from_secs(ttl_secs);
        let budget = RetryBudget::new(ttl, min_per_second, ratio).unwrap();
        let reserve = f64::from(min_per_second) * ttl.as_secs_f64();
        let slot = ttl / SLOTS as u32;
        let start = Instant::now();
        let epoch = || (start.elapsed().as_nanos() / slot.as_nanos()) as u64 + 1;
        let mut model = Model::default();
        let mut held: Vec<(RetryWithdrawal, u64)> = Vec::new();
        for op in ops {
            let now = epoch();
            match op {
                Op::Deposit => {
                    budget.deposit();
                    *model.deposits.entry(now).or_default() += 1;
                }
                Op::Withdraw => {
                    let spent = Model::in_window(&model.withdrawals, now);
                    let expected = spent as f64 + 1.0 <= model.allowed(now, ratio, reserve);
                    prop_assert_eq!(budget.has_room(), expected);
                    let taken = budget.withdraw_retry();
                    prop_assert_eq!(taken.is_some(), expected);
                    if let Some(withdrawal) = taken {
                        *model.withdrawals.entry(now).or_default() += 1;
                        held.push((withdrawal, now));
                    }
                }
                Op::GiveBack(i) if !held.is_empty() => {
                    let (withdrawal, taken_in) = held.swap_remove(i % held.len());
                    budget.give_back(withdrawal);
                    if taken_in + (SLOTS as u64) > now {
                        *model.withdrawals.entry(taken_in).or_default() -= 1;
                    }
                }
                Op::GiveBack(_) => {}
                Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
            }
            let now = epoch();
            let allowed = model.allowed(now, ratio, reserve);
            let left = allowed - Model::in_window(&model.withdrawals, now) as f64;
            prop_assert_eq!(budget.remaining(), left.max(0.0) as u64);
            // Give-backs never leave more than the window's deposits allow.
            prop_assert!(budget.remaining() as f64 <= allowed);
        }
        Ok(())
    })
}

proptest::proptest! {
    #[test]
    fn every_sequence_of_deposits_withdrawals_and_give_backs_matches_the_model(
        ttl_secs in 1u64..=60,
        min_per_second in 0u32..3,
        ratio in 0.0f64..1.0,
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        model_matches_the_budget(ttl_secs, min_per_second, ratio, ops)?;
    }
}
