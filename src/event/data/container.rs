//! The elements of an array or the members of an object in a [`Node`](super::Node), with where
//! the container stands verbatim in the event's text, if it does.
//!
//! A container is verbatim when its text is exactly what rendering it would write (compact
//! JSON: no whitespace, no escapes, no numbers but plain non-negative integers, no name given
//! twice); the hand-written decoder (`scan.rs`) records where. Rendering then copies those
//! bytes in one piece instead of writing value after value
//! ([`DataRef::write_json`](super::DataRef::write_json)). Any change forgets it: the contents
//! can only be reached mutably through `DerefMut`, which drops the span first, and a change
//! below a container passes through it, so no stale text is ever written for a container that
//! changed (the pipeline's redaction, for one).

use std::ops::{Deref, DerefMut};

#[derive(Debug, Clone)]
pub(crate) struct Container<T> {
    items: Vec<T>,
    /// Start and end bytes of the container's verbatim text; `(0, 0)` when it has none (a
    /// container's text is never empty).
    verbatim: (u32, u32),
}

impl<T> Container<T> {
    /// `items`, standing verbatim at `start..end` of the text.
    pub(crate) fn verbatim(items: Vec<T>, start: u32, end: u32) -> Self {
        Self { items, verbatim: (start, end) }
    }

    /// The container's verbatim bytes in `text`, if it has them.
    pub(crate) fn raw<'t>(&self, text: &'t str) -> Option<&'t [u8]> {
        let (start, end) = self.verbatim;
        match end {
            0 => None,
            _ => text.as_bytes().get(start as usize..end as usize),
        }
    }
}

impl<T> From<Vec<T>> for Container<T> {
    fn from(items: Vec<T>) -> Self {
        Self { items, verbatim: (0, 0) }
    }
}

impl<T> FromIterator<T> for Container<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Vec::from_iter(iter).into()
    }
}

impl<'a, T> IntoIterator for &'a Container<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl<T> Deref for Container<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.items
    }
}

impl<T> DerefMut for Container<T> {
    /// The contents, to change: the verbatim text is forgotten first.
    fn deref_mut(&mut self) -> &mut Vec<T> {
        self.verbatim = (0, 0);
        &mut self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaching_the_contents_to_change_them_forgets_the_text() {
        let text = "[1,2]";
        let mut c = Container::verbatim(vec![1, 2], 0, 5);
        assert_eq!(c.raw(text), Some(&b"[1,2]"[..]));
        assert_eq!(c.len(), 2, "reading keeps it");
        assert_eq!(c.raw(text), Some(&b"[1,2]"[..]));
        c.retain(|n| *n > 1);
        assert_eq!(c.raw(text), None);
        assert_eq!(Container::from(vec![1]).raw(text), None);
    }
}
