//! Generated container names, `adjective_name` as docker makes them. The word lists are
//! strata's own: adjectives, and people who shaped computing and storage.

const ADJECTIVES: &[&str] = &[
    "agile", "amber", "ample", "ardent", "austere", "bold", "brave", "brisk", "calm", "candid",
    "cheerful", "clever", "cosmic", "crisp", "daring", "deft", "eager", "earnest", "elegant",
    "epic", "fervent", "fond", "frank", "gallant", "gentle", "glad", "golden", "happy", "hardy",
    "humble", "jolly", "keen", "kind", "lively", "loyal", "lucid", "merry", "mighty", "modest",
    "nimble", "noble", "patient", "plucky", "polite", "proud", "quiet", "rapid", "ready", "serene",
    "sharp", "silent", "sleek", "smart", "solid", "spry", "steady", "stoic", "sunny", "swift",
    "tender", "tidy", "trusty", "vivid", "warm", "wise", "witty", "zealous", "zen",
];

const NAMES: &[&str] = &[
    "allen",
    "babbage",
    "backus",
    "bell",
    "bernerslee",
    "cerf",
    "codd",
    "conway",
    "corbato",
    "cray",
    "dijkstra",
    "engelbart",
    "feigenbaum",
    "floyd",
    "gray",
    "hamming",
    "hamilton",
    "hopper",
    "hoare",
    "kahn",
    "kay",
    "kernighan",
    "knuth",
    "lamport",
    "lampson",
    "liskov",
    "lovelace",
    "mccarthy",
    "metcalfe",
    "minsky",
    "moore",
    "naur",
    "neumann",
    "nygaard",
    "perlman",
    "pike",
    "postel",
    "ritchie",
    "rivest",
    "sammet",
    "shannon",
    "shamir",
    "spärck",
    "stonebraker",
    "stroustrup",
    "sutherland",
    "tanenbaum",
    "thompson",
    "torvalds",
    "turing",
    "wilkes",
    "wirth",
    "wozniak",
    "yao",
];

/// A random `adjective_name`; `attempt` > 0 appends a digit, as docker does after a clash.
pub fn generate(attempt: u32) -> String {
    let a = ADJECTIVES[rand::random::<usize>() % ADJECTIVES.len()];
    let n = NAMES[rand::random::<usize>() % NAMES.len()].replace('ä', "a");
    if attempt == 0 {
        format!("{a}_{n}")
    } else {
        format!("{a}_{n}{}", rand::random::<u32>() % 10)
    }
}

/// docker's rule for container names.
pub fn valid(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        for i in 0..50 {
            assert!(super::valid(&super::generate(i % 2)));
        }
        assert!(super::valid("web.1_a-b"));
        assert!(
            !super::valid("_web")
                && !super::valid("a/b")
                && !super::valid("")
                && !super::valid("a b")
        );
    }
}
