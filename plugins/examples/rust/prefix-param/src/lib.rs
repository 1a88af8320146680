//! Keep events whose key starts with the subscription's `prefix` parameter, as in
//! `{"prefix": "raw/"}`, and log the prefix with the first event filtered.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tidemark_filter::{Field, log, with};

/// `init`'s code for parameters without a string `prefix`.
const NO_PREFIX: i32 = -10;
/// `filter`'s code when `init` did not run (the host always runs it first).
const NOT_READY: i32 = -11;

static PREFIX: OnceLock<String> = OnceLock::new();
static LOGGED: AtomicBool = AtomicBool::new(false);

fn setup(params: &str) -> Result<(), i32> {
    let prefix = string_member(params, "prefix").ok_or(NO_PREFIX)?;
    // Each instance has its own memory, and `init` runs once per instance.
    PREFIX.set(prefix).map_err(|_| NOT_READY)
}

fn keep_prefix() -> Result<bool, i32> {
    let prefix = PREFIX.get().ok_or(NOT_READY)?;
    // Logs made in `init` are not kept (they belong to no event), so say it with the first one.
    if !LOGGED.swap(true, Ordering::Relaxed) {
        // Concatenated rather than `format!`, which would pull formatting code into the module.
        log(&["prefix-param: keeping keys under \"", prefix, "\""].concat());
    }
    Ok(with(Field::Key, |key| key.starts_with(prefix.as_str())) == Some(true))
}

tidemark_filter::filter!(keep_prefix, init = setup);

/// The value of member `name` of a flat JSON object whose values are strings, such as
/// `{"prefix": "raw/", "note": "x"}`: all this filter takes as parameters, so a few lines here
/// instead of a JSON library in the module. Anything else is `None`.
fn string_member(json: &str, name: &str) -> Option<String> {
    let mut s = Scanner(json.chars().peekable());
    if s.token()? != '{' {
        return None;
    }
    let mut found = None;
    s.skip_space();
    if s.0.next_if_eq(&'}').is_none() {
        loop {
            let member = s.string()?;
            if s.token()? != ':' {
                return None;
            }
            let value = s.string()?;
            if member == name {
                found = Some(value);
            }
            match s.token()? {
                ',' => {}
                '}' => break,
                _ => return None,
            }
        }
    }
    s.skip_space();
    s.0.next().is_none().then_some(found)?
}

struct Scanner<'a>(std::iter::Peekable<std::str::Chars<'a>>);

impl Scanner<'_> {
    fn skip_space(&mut self) {
        while self
            .0
            .next_if(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
            .is_some()
        {}
    }

    /// The next character that is not JSON whitespace.
    fn token(&mut self) -> Option<char> {
        self.skip_space();
        self.0.next()
    }

    fn string(&mut self) -> Option<String> {
        if self.token()? != '"' {
            return None;
        }
        let mut out = String::new();
        loop {
            let c = match self.0.next()? {
                '"' => return Some(out),
                '\\' => match self.0.next()? {
                    '"' => '"',
                    '\\' => '\\',
                    '/' => '/',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'u' => self.escaped_char()?,
                    _ => return None,
                },
                // JSON has control characters escaped.
                c if c < ' ' => return None,
                c => c,
            };
            out.push(c);
        }
    }

    /// After `\u`: a character, taking the second half of a surrogate pair when there is one.
    fn escaped_char(&mut self) -> Option<char> {
        let high = self.hex4()?;
        if !(0xd800..0xdc00).contains(&high) {
            // A lone low surrogate is no character: `from_u32` refuses it.
            return char::from_u32(high);
        }
        if self.0.next()? != '\\' || self.0.next()? != 'u' {
            return None;
        }
        let low = self.hex4()?;
        if !(0xdc00..0xe000).contains(&low) {
            return None;
        }
        char::from_u32(0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00))
    }

    fn hex4(&mut self) -> Option<u32> {
        (0..4).try_fold(0, |n, _| Some(n * 16 + self.0.next()?.to_digit(16)?))
    }
}
