//! The production SIEVE list (`policy` over `VecSlots`) against the reference model on random
//! access sequences: same hits, same victims, same order, and `validate()` after every step.

use std::collections::HashMap;

use proptest::prelude::*;
use warp_cache_core::model::SieveModel;
use warp_cache_core::policy::{self, SieveSlots, VecSlots};

/// Trace access through the bare policy: key -> slot map plus free-slot reuse.
fn replay(capacity: u32, keys: &[u16]) -> Result<(), TestCaseError> {
    let mut slots = VecSlots::new(capacity);
    let mut slot_of: HashMap<u16, u32> = HashMap::new();
    let mut key_of: HashMap<u32, u16> = HashMap::new();
    let mut model = SieveModel::new(capacity as usize);
    for (step, &key) in keys.iter().enumerate() {
        let model_hit = model.get(&key, 0).is_some();
        let hit = slot_of.contains_key(&key);
        prop_assert_eq!(hit, model_hit, "step {} key {}", step, key);
        if hit {
            policy::touch(&slots, slot_of[&key]).unwrap();
            continue;
        }
        let model_victim = model.insert(key, (), 0);
        let slot = if slot_of.len() as u32 == capacity {
            let victim = policy::evict(&mut slots).unwrap();
            let victim_key = key_of.remove(&victim).unwrap();
            slot_of.remove(&victim_key);
            prop_assert_eq!(Some(victim_key), model_victim, "step {}", step);
            victim
        } else {
            prop_assert_eq!(model_victim, None);
            let slot = slot_of.len() as u32;
            slots.ensure_slot(slot);
            slot
        };
        policy::insert(&mut slots, slot).unwrap();
        slot_of.insert(key, slot);
        key_of.insert(slot, key);
        policy::validate(&slots).unwrap();
        let order: Vec<u16> = policy::order_from_head(&slots)
            .iter()
            .map(|s| key_of[s])
            .collect();
        prop_assert_eq!(order, model.keys_from_head());
        let hand_key = (slots.hand() != policy::NO_SLOT).then(|| key_of[&slots.hand()]);
        prop_assert_eq!(hand_key, model.hand_key());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn policy_matches_reference_sieve(capacity in 1u32..24, keys in proptest::collection::vec(0u16..48, 0..400)) {
        replay(capacity, &keys)?;
    }
}
