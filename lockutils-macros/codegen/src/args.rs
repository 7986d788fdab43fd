//! Parsing of the attribute's arguments into [`SynchronizedArgs`].
//!
//! The grammar is `NAME (, OPTION)* ,?` where `NAME` is a string literal or a
//! path to a `LockName` const, and each `OPTION` appears at most once:
//!
//! ```text
//! prefix = "nova-" | prefix = CONST
//! external
//! lock_path = "/dir" | lock_path = CONST
//! blocking = true | blocking = false
//! timeout = "250ms"
//! fair
//! shared
//! flock
//! permits = 4 | permits = CONST
//! crate = some::path
//! ```
//!
//! Only syntax is checked here, plus what one option can say about itself
//! (a repeat, a bad duration, zero permits). Checks that involve several
//! options or the function live in `valid.rs`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{LitBool, LitInt, LitStr, Path, Token};

mod kw {
    syn::custom_keyword!(prefix);
    syn::custom_keyword!(external);
    syn::custom_keyword!(lock_path);
    syn::custom_keyword!(blocking);
    syn::custom_keyword!(timeout);
    syn::custom_keyword!(fair);
    syn::custom_keyword!(shared);
    syn::custom_keyword!(flock);
    syn::custom_keyword!(permits);
}

/// A string argument: a literal, or a path to a `&'static str` const.
pub(crate) enum StrArg {
    Lit(LitStr),
    Path(Path),
}

impl StrArg {
    pub(crate) fn span(&self) -> Span {
        match self {
            StrArg::Lit(lit) => lit.span(),
            StrArg::Path(path) => path.span(),
        }
    }
}

impl Parse for StrArg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(LitStr) {
            input.parse().map(StrArg::Lit)
        } else if starts_path(input) {
            Path::parse_mod_style(input).map(StrArg::Path)
        } else {
            Err(input.error("expected a string literal or a path to a `&'static str` const"))
        }
    }
}

fn starts_path(input: ParseStream<'_>) -> bool {
    input.peek(syn::Ident)
        || input.peek(Token![Self])
        || input.peek(Token![::])
        || input.peek(Token![crate])
        || input.peek(Token![self])
        || input.peek(Token![super])
}

/// The lock name: a literal (checked at expansion) or a path to a
/// `const NAME: lockutils::LockName` (checked during const evaluation).
pub(crate) type NameArg = StrArg;

/// `blocking = <bool>`, kept with its spans for error messages.
pub(crate) struct Blocking {
    pub(crate) keyword: kw::blocking,
    pub(crate) value: LitBool,
}

/// `timeout = "<duration>"`, with the duration already parsed.
pub(crate) struct Timeout {
    pub(crate) keyword: kw::timeout,
    pub(crate) nanos: u64,
}

/// `permits = N`: how many holders a counted semaphore admits.
pub(crate) enum Permits {
    /// A literal, already checked to be at least 1 and to fit a `u32`.
    Lit(LitInt, u32),
    /// A path to a `const` of type `u32`, checked (at least 1) during
    /// constant evaluation.
    Path(Path),
}

/// The value of `permits = ..` as written, before its number is checked.
pub(crate) enum PermitsArg {
    Lit(LitInt),
    Path(Path),
}

impl Parse for PermitsArg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(LitInt) {
            input.parse().map(PermitsArg::Lit)
        } else if starts_path(input) {
            Path::parse_mod_style(input).map(PermitsArg::Path)
        } else {
            Err(input.error(
                "expected the number of permits: an integer literal (at least 1) or a path to \
                 a `u32` const",
            ))
        }
    }
}

/// The value of a `permits` literal: a whole number from 1 to `u32::MAX`,
/// unsuffixed or suffixed `u32`.
fn permits_value(lit: &LitInt) -> syn::Result<u32> {
    if !matches!(lit.suffix(), "" | "u32") {
        let message = format!("`permits` is a `u32`, not a `{}`", lit.suffix());
        return Err(syn::Error::new(lit.span(), message));
    }
    let too_large = || {
        syn::Error::new(
            lit.span(),
            "`permits` must be at most 4294967295 (`u32::MAX`)",
        )
    };
    // i128: a negative literal (syn can see `-1` as one) is "too small".
    let n: i128 = lit.base10_parse().map_err(|_| too_large())?;
    match u32::try_from(n) {
        Ok(n) if n >= 1 => Ok(n),
        Err(_) if n > 0 => Err(too_large()),
        _ => Err(syn::Error::new(
            lit.span(),
            "`permits` must be at least 1: a semaphore of 0 permits could never be taken",
        )),
    }
}

/// The parsed arguments of `#[synchronized(...)]`.
pub(crate) struct SynchronizedArgs {
    pub(crate) name: NameArg,
    pub(crate) prefix: Option<(kw::prefix, StrArg)>,
    pub(crate) external: Option<kw::external>,
    pub(crate) lock_path: Option<(kw::lock_path, StrArg)>,
    pub(crate) blocking: Option<Blocking>,
    pub(crate) timeout: Option<Timeout>,
    pub(crate) fair: Option<kw::fair>,
    pub(crate) shared: Option<kw::shared>,
    pub(crate) flock: Option<kw::flock>,
    pub(crate) permits: Option<(kw::permits, Permits)>,
    pub(crate) krate: Option<(Token![crate], Path)>,
}

impl SynchronizedArgs {
    /// True when acquisition can fail at run time (and so needs somewhere
    /// to report the failure).
    pub(crate) fn is_fallible(&self) -> bool {
        self.external.is_some() || self.timeout.is_some() || self.is_nonblocking()
    }

    /// True for `blocking = false`.
    pub(crate) fn is_nonblocking(&self) -> bool {
        self.blocking.as_ref().is_some_and(|b| !b.value.value)
    }

    fn empty(name: NameArg) -> Self {
        SynchronizedArgs {
            name,
            prefix: None,
            external: None,
            lock_path: None,
            blocking: None,
            timeout: None,
            fair: None,
            shared: None,
            flock: None,
            permits: None,
            krate: None,
        }
    }

    fn set_prefix(&mut self, keyword: kw::prefix, value: StrArg) -> syn::Result<()> {
        reject_repeat(self.prefix.is_some(), keyword.span, "prefix")?;
        self.prefix = Some((keyword, value));
        Ok(())
    }

    fn set_external(&mut self, keyword: kw::external) -> syn::Result<()> {
        reject_repeat(self.external.is_some(), keyword.span, "external")?;
        self.external = Some(keyword);
        Ok(())
    }

    fn set_lock_path(&mut self, keyword: kw::lock_path, value: StrArg) -> syn::Result<()> {
        reject_repeat(self.lock_path.is_some(), keyword.span, "lock_path")?;
        self.lock_path = Some((keyword, value));
        Ok(())
    }

    fn set_blocking(&mut self, keyword: kw::blocking, value: LitBool) -> syn::Result<()> {
        reject_repeat(self.blocking.is_some(), keyword.span, "blocking")?;
        self.blocking = Some(Blocking { keyword, value });
        Ok(())
    }

    fn set_timeout(&mut self, keyword: kw::timeout, value: &LitStr) -> syn::Result<()> {
        reject_repeat(self.timeout.is_some(), keyword.span, "timeout")?;
        let nanos = parse_duration(&value.value())
            .map_err(|why| syn::Error::new(value.span(), format!("invalid timeout: {why}")))?;
        self.timeout = Some(Timeout { keyword, nanos });
        Ok(())
    }

    fn set_fair(&mut self, keyword: kw::fair) -> syn::Result<()> {
        reject_repeat(self.fair.is_some(), keyword.span, "fair")?;
        self.fair = Some(keyword);
        Ok(())
    }

    fn set_shared(&mut self, keyword: kw::shared) -> syn::Result<()> {
        reject_repeat(self.shared.is_some(), keyword.span, "shared")?;
        self.shared = Some(keyword);
        Ok(())
    }

    fn set_flock(&mut self, keyword: kw::flock) -> syn::Result<()> {
        reject_repeat(self.flock.is_some(), keyword.span, "flock")?;
        self.flock = Some(keyword);
        Ok(())
    }

    fn set_permits(&mut self, keyword: kw::permits, value: PermitsArg) -> syn::Result<()> {
        reject_repeat(self.permits.is_some(), keyword.span, "permits")?;
        let value = match value {
            PermitsArg::Lit(lit) => {
                let n = permits_value(&lit)?;
                Permits::Lit(lit, n)
            }
            PermitsArg::Path(path) => Permits::Path(path),
        };
        self.permits = Some((keyword, value));
        Ok(())
    }

    fn set_crate(&mut self, keyword: Token![crate], path: Path) -> syn::Result<()> {
        reject_repeat(self.krate.is_some(), keyword.span, "crate")?;
        self.krate = Some((keyword, path));
        Ok(())
    }

    /// Parses one `OPTION` and records it, returning the error of a repeat
    /// or bad value without stopping the parse; a syntax error stops it.
    fn parse_option(&mut self, input: ParseStream<'_>) -> syn::Result<Option<syn::Error>> {
        let lookahead = input.lookahead1();
        let recorded = if lookahead.peek(kw::prefix) {
            let keyword = input.parse()?;
            input.parse::<Token![=]>()?;
            self.set_prefix(keyword, input.parse()?)
        } else if lookahead.peek(kw::external) {
            self.set_external(input.parse()?)
        } else if lookahead.peek(kw::lock_path) {
            let keyword = input.parse()?;
            input.parse::<Token![=]>()?;
            self.set_lock_path(keyword, input.parse()?)
        } else if lookahead.peek(kw::blocking) {
            let keyword = input.parse()?;
            input.parse::<Token![=]>()?;
            self.set_blocking(keyword, input.parse()?)
        } else if lookahead.peek(kw::timeout) {
            let keyword = input.parse()?;
            input.parse::<Token![=]>()?;
            let value: LitStr = input.parse()?;
            self.set_timeout(keyword, &value)
        } else if lookahead.peek(kw::fair) {
            self.set_fair(input.parse()?)
        } else if lookahead.peek(kw::shared) {
            self.set_shared(input.parse()?)
        } else if lookahead.peek(kw::flock) {
            self.set_flock(input.parse()?)
        } else if lookahead.peek(kw::permits) {
            let keyword = input.parse()?;
            input.parse::<Token![=]>()?;
            self.set_permits(keyword, input.parse()?)
        } else if lookahead.peek(Token![crate]) {
            let keyword = input.parse()?;
            input.parse::<Token![=]>()?;
            self.set_crate(keyword, Path::parse_mod_style(input)?)
        } else {
            return Err(lookahead.error());
        };
        Ok(recorded.err())
    }
}

fn reject_repeat(already: bool, span: Span, option: &str) -> syn::Result<()> {
    if already {
        Err(syn::Error::new(
            span,
            format!("`{option}` is given more than once"),
        ))
    } else {
        Ok(())
    }
}

/// True when the input starts with an option rather than a name, so the
/// user forgot the name (`#[synchronized(external)]`).
fn starts_with_option(input: ParseStream<'_>) -> bool {
    let fork = input.fork();
    let is_keyword = fork.peek(kw::prefix)
        || fork.peek(kw::lock_path)
        || fork.peek(kw::blocking)
        || fork.peek(kw::timeout)
        || fork.peek(kw::permits)
        || fork.peek(Token![crate]);
    if is_keyword {
        // `crate::NAME` is a path, `crate = x` an option.
        return fork.peek2(Token![=]);
    }
    let is_flag = fork.peek(kw::external)
        || fork.peek(kw::fair)
        || fork.peek(kw::shared)
        || fork.peek(kw::flock);
    is_flag && (fork.peek2(Token![,]) || is_last_token(&fork))
}

fn is_last_token(input: ParseStream<'_>) -> bool {
    input
        .cursor()
        .token_tree()
        .is_some_and(|(_, rest)| rest.eof())
}

const MISSING_NAME: &str = "missing lock name: it comes first, as a string literal or a path \
                            to a `LockName` const, e.g. `#[synchronized(\"name\", ...)]`";

impl Parse for SynchronizedArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(syn::Error::new(Span::call_site(), MISSING_NAME));
        }
        if starts_with_option(input) {
            return Err(syn::Error::new(input.span(), MISSING_NAME));
        }
        let name = if input.peek(LitStr) {
            StrArg::Lit(input.parse()?)
        } else if starts_path(input) {
            StrArg::Path(Path::parse_mod_style(input)?)
        } else {
            return Err(syn::Error::new(input.span(), MISSING_NAME));
        };

        let mut args = SynchronizedArgs::empty(name);
        let mut soft_errors: Option<syn::Error> = None;
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            if let Some(error) = args.parse_option(input)? {
                combine(&mut soft_errors, error);
            }
        }
        match soft_errors {
            Some(error) => Err(error),
            None => Ok(args),
        }
    }
}

/// Adds `error` to the errors collected so far.
pub(crate) fn combine(errors: &mut Option<syn::Error>, error: syn::Error) {
    match errors {
        Some(existing) => existing.combine(error),
        None => *errors = Some(error),
    }
}

/// Parses a duration such as `250ms`, `1.5s` or `2 m` into nanoseconds.
///
/// Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`. The number may have a
/// fractional part as long as the result is a whole number of nanoseconds.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim_start());
    if number.is_empty() {
        return Err(format!(
            "expected a number followed by a unit, e.g. \"250ms\", found {text:?}"
        ));
    }
    let unit_nanos: u128 = match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3600 * 1_000_000_000,
        "" => {
            return Err(format!(
                "{number:?} has no unit: use one of ns, us, ms, s, m, h"
            ));
        }
        other => {
            return Err(format!(
                "unknown unit {other:?}: use one of ns, us, ms, s, m, h"
            ));
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(format!("{number:?} is not a number"));
    }
    let too_long = || format!("{text:?} is longer than u64::MAX nanoseconds (about 584 years)");
    let whole: u128 = whole.parse().map_err(|_| too_long())?;
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(too_long)?;
    if !fraction.is_empty() {
        let digits = u32::try_from(fraction.len()).map_err(|_| too_long())?;
        let scale = 10u128
            .checked_pow(digits)
            .ok_or_else(|| format!("{number:?} has too many decimals"))?;
        let fraction: u128 = fraction.parse().map_err(|_| too_long())?;
        let scaled = fraction.checked_mul(unit_nanos).ok_or_else(too_long)?;
        if scaled % scale != 0 {
            return Err(format!("{text:?} is not a whole number of nanoseconds"));
        }
        nanos = nanos.checked_add(scaled / scale).ok_or_else(too_long)?;
    }
    if nanos == 0 {
        return Err("a zero timeout never waits: use `blocking = false` instead".to_owned());
    }
    u64::try_from(nanos).map_err(|_| too_long())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(250_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("2 m"), Ok(120_000_000_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000_000_000));
        assert_eq!(parse_duration("10us"), Ok(10_000));
        assert_eq!(parse_duration("10µs"), Ok(10_000));
        assert_eq!(parse_duration("7ns"), Ok(7));
        assert_eq!(parse_duration("0.001ms"), Ok(1_000));
        assert_eq!(parse_duration("18446744073709551615ns"), Ok(u64::MAX));
    }

    #[test]
    fn bad_durations() {
        for bad in [
            "",
            "ms",
            "250",
            "250 parsecs",
            "1.2.3s",
            "1.s",
            ".5s",
            "-1s",
            "0s",
            "0.0ms",
            "1.5ns",
            "18446744073709551616ns",
            "99999999999999999999999999999999999999999h",
            "1.00000000000000000000000000000000000000000001s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn parses_every_option() {
        let args: SynchronizedArgs = syn::parse_quote!(
            "n",
            prefix = "p-",
            external,
            lock_path = DIR,
            blocking = true,
            timeout = "1s",
            fair,
            shared,
            permits = 3,
            crate = ::my::lockutils,
        );
        assert!(matches!(args.name, StrArg::Lit(ref l) if l.value() == "n"));
        assert!(args.prefix.is_some() && args.external.is_some());
        assert!(matches!(args.lock_path, Some((_, StrArg::Path(_)))));
        assert!(!args.is_nonblocking());
        assert_eq!(args.timeout.as_ref().map(|t| t.nanos), Some(1_000_000_000));
        assert!(args.krate.is_some());
        assert!(args.is_fallible());
        assert!(args.fair.is_some() && args.shared.is_some());
        assert!(matches!(args.permits, Some((_, Permits::Lit(_, 3)))));
    }

    #[test]
    fn permits_forms() {
        let args: SynchronizedArgs = syn::parse_quote!("n", permits = limits::MAX_USERS);
        assert!(matches!(args.permits, Some((_, Permits::Path(_)))));
        let args: SynchronizedArgs = syn::parse_quote!("n", permits = 4_294_967_295u32);
        assert!(matches!(args.permits, Some((_, Permits::Lit(_, u32::MAX)))));
        assert!(args.fair.is_none() && args.shared.is_none());
        assert!(!args.is_fallible(), "permits alone cannot fail");
    }

    #[test]
    fn name_forms() {
        let args: SynchronizedArgs = syn::parse_quote!(crate::names::NAME);
        assert!(matches!(args.name, StrArg::Path(_)));
        let args: SynchronizedArgs = syn::parse_quote!(EXTERNAL, external);
        assert!(matches!(args.name, StrArg::Path(_)));
        assert!(args.is_fallible());
        let args: SynchronizedArgs = syn::parse_quote!(self::external_name);
        assert!(matches!(args.name, StrArg::Path(_)));
        let args: SynchronizedArgs = syn::parse_quote!(Self::NAME, prefix = Self::PREFIX);
        assert!(matches!(args.name, StrArg::Path(_)));
        assert!(matches!(args.prefix, Some((_, StrArg::Path(_)))));
    }

    fn error(tokens: proc_macro2::TokenStream) -> String {
        match syn::parse2::<SynchronizedArgs>(tokens) {
            Ok(_) => panic!("accepted"),
            Err(e) => e
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(" | "),
        }
    }

    #[test]
    fn errors() {
        assert!(error(quote::quote!()).starts_with("missing lock name"));
        assert!(error(quote::quote!(external, blocking = false)).starts_with("missing lock name"));
        assert!(error(quote::quote!(external)).starts_with("missing lock name"));
        assert!(error(quote::quote!(crate = x)).starts_with("missing lock name"));
        assert!(error(quote::quote!(prefix = "x")).starts_with("missing lock name"));
        assert!(error(quote::quote!(42)).starts_with("missing lock name"));
        assert_eq!(
            error(quote::quote!(
                "n",
                external,
                external,
                prefix = "a",
                prefix = "b"
            )),
            "`external` is given more than once | `prefix` is given more than once"
        );
        assert!(error(quote::quote!("n", blockin = false)).starts_with("expected one of"));
        assert!(error(quote::quote!("n", timeout = "soon")).starts_with("invalid timeout"));
        assert!(error(quote::quote!("n", blocking = "no")).contains("boolean"));
        assert!(error(quote::quote!(fair)).starts_with("missing lock name"));
        assert!(error(quote::quote!(shared, external)).starts_with("missing lock name"));
        assert!(error(quote::quote!(permits = 2)).starts_with("missing lock name"));
    }

    #[test]
    fn permits_errors() {
        assert!(error(quote::quote!("n", permits = 0)).starts_with("`permits` must be at least 1"));
        assert!(error(quote::quote!("n", permits = 4294967296)).contains("at most 4294967295"));
        assert!(error(quote::quote!("n", permits = 99999999999999999999999)).contains("at most"));
        assert_eq!(
            error(quote::quote!("n", permits = 3u8)),
            "`permits` is a `u32`, not a `u8`"
        );
        // `-1` is one literal or two tokens depending on who tokenized it.
        let negative = error(quote::quote!("n", permits = -1));
        assert!(
            negative.starts_with("`permits` must be at least 1")
                || negative.starts_with("expected the number of permits"),
            "{negative}"
        );
        assert!(
            error(quote::quote!("n", permits = "3")).starts_with("expected the number of permits")
        );
        assert!(error(quote::quote!("n", permits)).contains("expected `=`"));
        // Bad values and repeats are all reported, and parsing goes on.
        assert_eq!(
            error(quote::quote!(
                "n",
                permits = 0,
                fair,
                fair,
                shared,
                shared,
                permits = 2,
                permits = 3
            )),
            "`permits` must be at least 1: a semaphore of 0 permits could never be taken \
             | `fair` is given more than once | `shared` is given more than once \
             | `permits` is given more than once"
        );
    }
}
