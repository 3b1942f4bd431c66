//! Reading a sale's event stream: Server-Sent Events, as a page's
//! `EventSource` reads them, down to the one fact a crowd waits for: the
//! sale is sold out.
//!
//! Bytes arrive in whatever chunks the connection delivers, so the reader
//! keeps the partial line between chunks. A line longer than
//! [`MAX_LINE`] is an error rather than an unbounded buffer: the front's
//! events are a few dozen bytes.

use flashsale_protocol::json::StockEvent;
use flashsale_protocol::SaleState;

/// The longest line accepted.
pub const MAX_LINE: usize = 64 * 1024;

/// A stream that broke the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line without its end within [`MAX_LINE`] bytes.
    #[error("an event line longer than {MAX_LINE} bytes")]
    LineTooLong,
}

/// The events of one stream, fed chunk by chunk.
#[derive(Debug, Default)]
pub struct EventReader {
    /// The unfinished line.
    line: Vec<u8>,
    /// The `data:` lines of the event being read, joined by `\n`.
    data: String,
    /// Whether `data` holds at least one `data:` line.
    has_data: bool,
}

impl EventReader {
    /// Feeds a chunk; returns the `data` of every event it completes, in
    /// order. Comments, `retry:` and other fields are read and dropped.
    ///
    /// # Errors
    ///
    /// [`SseError::LineTooLong`] when a line does not end in time.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, SseError> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            self.line.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            let line = std::mem::take(&mut self.line);
            self.field(&line, &mut events);
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_LINE {
            return Err(SseError::LineTooLong);
        }
        Ok(events)
    }

    fn field(&mut self, line: &[u8], events: &mut Vec<String>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if std::mem::take(&mut self.has_data) {
                events.push(std::mem::take(&mut self.data));
            }
            return;
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(0) => return,
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        if name == b"data" {
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(&String::from_utf8_lossy(value));
            self.has_data = true;
        }
    }
}

/// Whether an event's data says the sale is sold out. Data that is not a
/// stock event says nothing.
pub fn says_sold_out(data: &str) -> bool {
    serde_json::from_str::<StockEvent>(data).is_ok_and(|e| e.state == SaleState::SoldOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str =
        "retry: 2000\ndata: {\"remaining\":12,\"sold\":188,\"state\":\"open\"}\n\n\
        : keep-alive\n\n\
        data: {\"remaining\":0,\"sold\":200,\"state\":\"sold_out\"}\r\n\r\n";

    #[test]
    fn events_are_found_in_any_chunking() {
        for size in 1..=STREAM.len() {
            let mut reader = EventReader::default();
            let mut events = Vec::new();
            for chunk in STREAM.as_bytes().chunks(size) {
                events.extend(reader.feed(chunk).unwrap());
            }
            assert_eq!(events.len(), 2, "chunks of {size}");
            assert!(!says_sold_out(&events[0]));
            assert!(says_sold_out(&events[1]));
        }
    }

    #[test]
    fn only_a_sold_out_stock_event_says_sold_out() {
        assert!(says_sold_out(
            r#"{"remaining":0,"sold":5,"state":"sold_out"}"#
        ));
        for other in [
            r#"{"remaining":0,"sold":5,"state":"closed"}"#,
            r#"{"remaining":1,"sold":4,"state":"open"}"#,
            r#"{"state":"sold_out"}"#,
            "sold_out",
            "",
        ] {
            assert!(!says_sold_out(other), "{other}");
        }
    }

    #[test]
    fn multi_line_data_is_joined_and_an_event_without_data_is_none() {
        let mut reader = EventReader::default();
        let events = reader
            .feed(b"data: a\ndata:b\nevent: x\n\nretry: 5\n\n")
            .unwrap();
        assert_eq!(events, vec!["a\nb".to_owned()]);
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut reader = EventReader::default();
        let long = vec![b'x'; MAX_LINE + 1];
        assert_eq!(reader.feed(&long), Err(SseError::LineTooLong));
    }
}
