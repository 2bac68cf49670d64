//! AMQP topic matching, as RabbitMQ does it: words separated by `.`, `*` matches exactly one
//! word, `#` matches zero or more. Used to check route patterns at load and by brokers that
//! route without RabbitMQ.

/// Whether `pattern` is a well-formed topic pattern (no empty words; `*`/`#` only as whole words).
pub fn valid_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("an event pattern must not be empty".into());
    }
    if pattern.len() > 255 {
        return Err("an event pattern must be at most 255 bytes (an AMQP routing key)".into());
    }
    for word in pattern.split('.') {
        if word.is_empty() {
            return Err(format!("event pattern {pattern:?} has an empty word (two dots, or a dot at an end)"));
        }
        if word != "*" && word != "#" && word.contains(['*', '#']) {
            return Err(format!(
                "event pattern {pattern:?}: `*` and `#` stand for whole words, as in `order.*` or `order.#`"
            ));
        }
    }
    Ok(())
}

/// Whether routing key `key` matches `pattern`.
pub fn matches(pattern: &str, key: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    match_words(&p, &k)
}

fn match_words(p: &[&str], k: &[&str]) -> bool {
    match p.split_first() {
        None => k.is_empty(),
        Some((&"#", rest)) => (0..=k.len()).any(|i| match_words(rest, &k[i..])),
        Some((&"*", rest)) => !k.is_empty() && match_words(rest, &k[1..]),
        Some((w, rest)) => k.first() == Some(w) && match_words(rest, &k[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_is_one_word_hash_is_any() {
        assert!(matches("order.*", "order.paid"));
        assert!(!matches("order.*", "order.paid.late"));
        assert!(!matches("order.*", "order"));
        assert!(matches("order.#", "order"));
        assert!(matches("order.#", "order.paid.late"));
        assert!(matches("#", "anything.at.all"));
        assert!(matches("*.paid", "order.paid"));
        assert!(!matches("order.paid", "order.created"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        assert!(valid_pattern("order.*").is_ok());
        assert!(valid_pattern("order..paid").is_err());
        assert!(valid_pattern("order.pa*").is_err());
        assert!(valid_pattern("").is_err());
    }
}
