//! Parsing, validation and expansion of lockutils' `#[synchronized]`.
//!
//! This is an ordinary library so that two proc-macro crates can share it:
//! `lockutils-macros`, which exports `#[synchronized]`, and your own, if you
//! want an attribute with your project's prefix built in (see
//! [`synchronized_with_prefix!`]).
//!
//! The code it generates names only `::lockutils::__private_v0_1` (or
//! `<crate>::__private_v0_1` with `crate = path`; the suffix is this
//! crate's version, so a mismatched pair fails to resolve it); what that module offers is an
//! implementation detail shared by the two crates, which move in lockstep.
#![warn(missing_docs)]

mod alias;
mod args;
mod expand;
mod item;
mod valid;

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::Item;
use syn::spanned::Spanned;

use item::MaybeItemFn;

use crate::args::SynchronizedArgs;
use crate::valid::Alias;

#[doc(hidden)]
pub use lockutils_name as __name;

/// Expands `#[synchronized(attr)] item`.
///
/// On any error the result is `item` unchanged followed by the compile
/// errors, so the user sees those errors and not a cascade of follow-ups.
pub fn synchronized(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_with(attr, item, None)
}

/// Expands an alias of `#[synchronized]` whose prefix is fixed to `prefix`;
/// `alias_name` is the alias attribute's name, for error messages.
///
/// This is what [`synchronized_with_prefix!`] calls; you rarely need it
/// directly.
pub fn synchronized_with_fixed_prefix(
    prefix: &str,
    alias_name: &str,
    attr: TokenStream,
    item: TokenStream,
) -> TokenStream {
    let alias = Alias {
        name: alias_name,
        prefix,
    };
    expand_with(attr, item, Some(alias))
}

fn expand_with(attr: TokenStream, item: TokenStream, alias: Option<Alias<'_>>) -> TokenStream {
    let args = syn::parse2::<SynchronizedArgs>(attr);
    let func = parse_function(item.clone());
    let error = match (args, func) {
        (Ok(args), Ok(func)) => match valid::check(&args, &func, alias) {
            Ok(checked) => return expand::expand(&args, &checked, &func, alias),
            Err(error) => error,
        },
        (Err(mut error), Err(func_error)) => {
            error.combine(func_error);
            error
        }
        (Err(error), Ok(_)) | (Ok(_), Err(error)) => error,
    };
    fallback(item, error)
}

/// The input unchanged next to the errors, so that nothing else fails.
fn fallback(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.into_compile_error();
    if syn::parse2::<Item>(item.clone()).is_ok() {
        quote!(#item #error)
    } else {
        // Not an item: an expression or statement (where attributes are
        // unstable, so rustc reports that too). A block keeps it one
        // expression, so the error is not followed by a parse error.
        quote!({ #error; #item })
    }
}

/// The decorated item, which must be a function with a body.
fn parse_function(item: TokenStream) -> syn::Result<MaybeItemFn> {
    if let Ok(func) = syn::parse2::<MaybeItemFn>(item.clone()) {
        return Ok(func);
    }
    // Not a function with a body: parse it in full, to say what it is.
    let Ok(parsed) = syn::parse2::<Item>(item) else {
        let message = "#[synchronized] can only be used on functions, not on an expression \
                       or statement: to lock a closure's body, call a #[synchronized] function \
                       from it";
        return Err(syn::Error::new(Span::call_site(), message));
    };
    let (span, kind) = match parsed {
        Item::Fn(func) => (func.sig.fn_token.span, "this function"),
        Item::Verbatim(tokens) => {
            let message = "#[synchronized] needs a function with a body";
            return Err(syn::Error::new_spanned(tokens, message));
        }
        Item::Const(i) => (i.const_token.span, "a const"),
        Item::Enum(i) => (i.enum_token.span, "an enum"),
        Item::ExternCrate(i) => (i.extern_token.span, "an extern crate"),
        Item::ForeignMod(i) => (i.abi.extern_token.span, "an extern block"),
        Item::Impl(i) => (i.impl_token.span, "an impl block (put it on the methods)"),
        Item::Macro(i) => (i.mac.path.span(), "a macro invocation"),
        Item::Mod(i) => (i.mod_token.span, "a module"),
        Item::Static(i) => (i.static_token.span, "a static"),
        Item::Struct(i) => (i.struct_token.span, "a struct"),
        Item::Trait(i) => (i.trait_token.span, "a trait (put it on the methods)"),
        Item::TraitAlias(i) => (i.trait_token.span, "a trait alias"),
        Item::Type(i) => (i.type_token.span, "a type alias"),
        Item::Union(i) => (i.union_token.span, "a union"),
        Item::Use(i) => (i.use_token.span, "a use declaration"),
        other => (first_span(&other), "this item"),
    };
    let message = format!("#[synchronized] can only be used on functions, not on {kind}");
    Err(syn::Error::new(span, message))
}

fn first_span(item: &Item) -> Span {
    item.to_token_stream()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}
