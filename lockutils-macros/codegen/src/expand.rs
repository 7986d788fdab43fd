//! Output: the function with one guard statement added.
//!
//! For a plain or `async` function the body gets one statement at its top:
//!
//! ```text
//! let __lockutils_guard = {
//!     static __LOCKUTILS_SITE: CallSite = CallSite::new(LockSpec::new(name, prefix, function)..);
//!     __LOCKUTILS_SITE.acquire_or_panic()    // or .acquire() + return Err(..), or .await
//! };
//! <body, untouched>
//! ```
//!
//! so `return`, `?`, `self` and generics behave as they did. The guard's
//! name has mixed-site hygiene and the `static` lives in the initializer's
//! block, so the body can see neither. Items get no hygiene on stable, so
//! the `static` has a name no user const is likely to have: inside that
//! block it shadows any item of the same name the arguments might use.
//!
//! Arguments that name `Self` or the function's generic parameters
//! (`T::NAME`, `prefix = Self::PREFIX`, `permits = N`) cannot be used in a
//! `static` (E0401). Then the spec is an inline `const { LockSpec::new(..) }`
//! block (still checked during constant evaluation, per instantiation) and
//! the lock is looked up in the registry on every call.
//!
//! A plain function returning a future gets its body evaluated by an
//! immediately called `move` closure (an early `return` in the body still
//! yields the future) and returns a new future that first awaits the lock,
//! then runs the original one. That future is an `async` block, `Send` when
//! its parts are; when the signature promises `Unpin` it is boxed and pinned.

use proc_macro2::{Delimiter, Group, Ident, Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::ReturnType;
use syn::spanned::Spanned;

use crate::args::{Permits, StrArg, SynchronizedArgs};
use crate::item::MaybeItemFn;
use crate::valid::{Alias, Checked, Shape};

/// Adds the guard to `func` and returns its tokens.
pub(crate) fn expand(
    args: &SynchronizedArgs,
    checked: &Checked,
    func: &MaybeItemFn,
    alias: Option<Alias<'_>>,
) -> TokenStream {
    let private = private_path(args);
    let spec = lock_spec(args, func, alias, &private);
    // A `static` cannot name the function's generics or `Self` (E0401):
    // such a spec is built in an inline `const` block instead, which can,
    // and taken through the registry on every call (no call-site cache).
    let (site, receiver) = if names_generics(args, func) {
        (TokenStream::new(), quote!((const { #spec })))
    } else {
        let site = site_ident();
        (
            quote!(static #site: #private::CallSite = #private::CallSite::new(#spec);),
            site.into_token_stream(),
        )
    };
    let guard = Ident::new("__lockutils_guard", Span::mixed_site());
    let propagate = args.is_fallible() && checked.returns_result;

    let body = match checked.shape {
        Shape::Sync | Shape::AsyncFn => {
            let is_async = checked.shape == Shape::AsyncFn;
            let acquire = acquire(&private, &receiver, propagate, is_async);
            let stmts = &func.body;
            quote! {
                let #guard = { #site #acquire };
                #stmts
            }
        }
        Shape::ImplFuture | Shape::BoxedFuture => {
            let acquire = acquire(&private, &receiver, propagate, true);
            let take_lock = quote!(let #guard = { #site #acquire };);
            wrap_future(func, checked.shape == Shape::BoxedFuture, take_lock)
        }
    };

    // Outer attributes, then the signature, then inner attributes
    // (`#![...]`) inside the braces, as written.
    let (outer, inner) = (&func.outer_attrs, &func.inner_attrs);
    let (vis, sig) = (&func.vis, &func.sig);
    quote! {
        #(#outer)* #vis #sig {
            #(#inner)*
            #body
        }
    }
}

/// The body of a function returning a future: build the original future,
/// then return one that runs `take_lock` before awaiting it.
fn wrap_future(func: &MaybeItemFn, boxed: bool, take_lock: TokenStream) -> TokenStream {
    let fut = Ident::new("__lockutils_future", Span::mixed_site());
    let body = func.block();
    // A boxed return type can be written on the closure, so that its
    // `return`s coerce as they did in the function; `impl Future` cannot
    // be, and needs no coercion.
    let annotation = match (&func.sig.output, boxed) {
        (ReturnType::Type(arrow, ty), true) => quote!(#arrow #ty),
        _ => TokenStream::new(),
    };
    let mut future = quote! {
        async move {
            #take_lock
            #fut.await
        }
    };
    // An `async` block is never `Unpin`; boxed and pinned it is (and stays
    // `Send` if it was). Only done when the signature asks for `Unpin`.
    if boxed || promises_unpin(&func.sig.output) {
        future = quote!(::std::boxed::Box::pin(#future));
    }
    // The closure makes an early `return` in the body yield the future to
    // wrap, instead of leaving the function with it unwrapped.
    quote! {
        #[allow(clippy::redundant_closure_call)]
        let #fut = (move || #annotation #body)();
        #future
    }
}

/// The facade's private module this codegen was built for, named after
/// its version (`__private_v0_1`): an alias crate built against another
/// version of `lockutils-codegen` than its `lockutils` then fails with
/// "could not find `__private_v0_2` in `lockutils`", naming the versions,
/// instead of a confusing error deep inside the expansion.
pub(crate) const PRIVATE_MODULE: &str = concat!(
    "__private_v",
    env!("CARGO_PKG_VERSION_MAJOR"),
    "_",
    env!("CARGO_PKG_VERSION_MINOR")
);

/// `<crate>::__private_vX_Y`, the one path generated code names.
fn private_path(args: &SynchronizedArgs) -> TokenStream {
    let module = Ident::new(PRIVATE_MODULE, Span::call_site());
    match &args.krate {
        Some((_, path)) => quote!(#path::#module),
        None => quote!(::lockutils::#module),
    }
}

/// `-> impl Future<..> + Unpin`.
fn promises_unpin(output: &ReturnType) -> bool {
    let ReturnType::Type(_, ty) = output else {
        return false;
    };
    let syn::Type::ImplTrait(ty) = &**ty else {
        return false;
    };
    ty.bounds.iter().any(|b| {
        matches!(b, syn::TypeParamBound::Trait(t)
            if t.path.segments.last().is_some_and(|s| s.ident == "Unpin"))
    })
}

/// Whether a path argument starts with `Self` or one of the function's
/// generic parameters, which a `static` cannot name.
fn names_generics(args: &SynchronizedArgs, func: &MaybeItemFn) -> bool {
    let generics: Vec<&Ident> = func
        .sig
        .generics
        .params
        .iter()
        .filter_map(|p| match p {
            syn::GenericParam::Type(t) => Some(&t.ident),
            syn::GenericParam::Const(c) => Some(&c.ident),
            syn::GenericParam::Lifetime(_) => None,
        })
        .collect();
    // `T::NAME`, `Self::NAME`, or a const parameter itself (`permits = N`).
    let generic = |path: &syn::Path| {
        path.leading_colon.is_none()
            && path.segments.first().is_some_and(|first| {
                first.ident == "Self" || generics.iter().any(|g| first.ident == **g)
            })
    };
    let str_arg = |arg: Option<&StrArg>| matches!(arg, Some(StrArg::Path(p)) if generic(p));
    str_arg(Some(&args.name))
        || str_arg(args.prefix.as_ref().map(|(_, a)| a))
        || str_arg(args.lock_path.as_ref().map(|(_, a)| a))
        || matches!(&args.permits, Some((_, Permits::Path(p))) if generic(p))
}

/// `LockSpec::new(..)..`: the arguments, checked during constant evaluation.
fn lock_spec(
    args: &SynchronizedArgs,
    func: &MaybeItemFn,
    alias: Option<Alias<'_>>,
    private: &TokenStream,
) -> TokenStream {
    let name = match &args.name {
        StrArg::Lit(lit) => lit.to_token_stream(),
        // Spanned on the path, so a const of the wrong type is reported there.
        StrArg::Path(path) => quote_spanned!(path.span()=> #private::LockName::as_str(#path)),
    };
    let prefix = match (&args.prefix, alias) {
        (_, Some(alias)) => Literal::string(alias.prefix).into_token_stream(),
        (Some((_, StrArg::Lit(lit))), None) => lit.to_token_stream(),
        (Some((_, StrArg::Path(path))), None) => path.to_token_stream(),
        (None, None) => quote!(""),
    };
    let fn_name = func.sig.ident.to_string();
    let fn_name = fn_name.strip_prefix("r#").unwrap_or(&fn_name);
    let function = quote!(::core::concat!(::core::module_path!(), "::", #fn_name));

    // A const name or prefix is checked by `LockSpec::new` during constant
    // evaluation; point its error at the const that can be wrong.
    let span = match (&args.prefix, &args.name) {
        (Some((_, StrArg::Path(path))), _) | (_, StrArg::Path(path)) => path.span(),
        _ => Span::call_site(),
    };
    let mut spec = respan(quote!(#private::LockSpec::new), span);
    spec.extend(quote_spanned!(span=> (#name, #prefix, #function)));
    if args.external.is_some() {
        spec.extend(quote!(.external()));
    }
    if let Some((_, path)) = &args.lock_path {
        let path = match path {
            StrArg::Lit(lit) => lit.to_token_stream(),
            StrArg::Path(path) => path.to_token_stream(),
        };
        spec.extend(quote!(.lock_path(#path)));
    }
    if args.is_nonblocking() {
        spec.extend(quote!(.nonblocking()));
    }
    if let Some(timeout) = &args.timeout {
        let nanos = Literal::u64_suffixed(timeout.nanos);
        spec.extend(quote!(.timeout_nanos(#nanos)));
    }
    kind_options(args, spec, private)
}

/// `spec` with `.fair()`, `.shared()` and `.permits(n)`: what kind of
/// lock it is.
fn kind_options(
    args: &SynchronizedArgs,
    mut spec: TokenStream,
    private: &TokenStream,
) -> TokenStream {
    if args.fair.is_some() {
        spec.extend(quote!(.fair()));
    }
    if args.shared.is_some() {
        spec.extend(quote!(.shared()));
    }
    if args.flock.is_some() {
        spec.extend(quote!(.flock()));
    }
    match &args.permits {
        Some((_, Permits::Lit(lit, n))) => {
            let mut n = Literal::u32_suffixed(*n);
            n.set_span(lit.span());
            spec.extend(quote!(.permits(#n)));
        }
        // A const that is 0 makes `LockSpec::permits` panic during constant
        // evaluation, which rustc reports at the span of the whole call. As
        // a method call that would span the attribute; as a path call whose
        // tokens all carry the const's span, it is the const.
        Some((_, Permits::Path(path))) => {
            let span = path.span();
            let mut call = respan(quote!(#private::LockSpec::permits), span);
            let mut args = Group::new(Delimiter::Parenthesis, quote!(#spec, #path));
            args.set_span(span);
            call.extend([TokenTree::Group(args)]);
            spec = call;
        }
        None => {}
    }
    spec
}

/// `tokens` with every span set to `span` (rustc reports a call at the span
/// its tokens share).
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut new = Group::new(group.delimiter(), respan(group.stream(), span));
                new.set_span(span);
                token = TokenTree::Group(new);
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

fn site_ident() -> Ident {
    Ident::new("__LOCKUTILS_SITE", Span::mixed_site())
}

/// The expression that takes the lock through `site` (the call site's
/// `static`, or a `LockSpec`) and yields the guard.
fn acquire(
    private: &TokenStream,
    site: &TokenStream,
    propagate: bool,
    is_async: bool,
) -> TokenStream {
    let (call, or_panic, wait) = if is_async {
        (
            quote!(acquire_async),
            quote!(acquire_async_or_panic),
            quote!(.await),
        )
    } else {
        (
            quote!(acquire),
            quote!(acquire_or_panic),
            TokenStream::new(),
        )
    };
    if !propagate {
        return quote!(#site.#or_panic() #wait);
    }
    let error = Ident::new("error", Span::mixed_site());
    let guard = Ident::new("guard", Span::mixed_site());
    quote! {
        match #site.#call() #wait {
            ::core::result::Result::Ok(#guard) => #guard,
            ::core::result::Result::Err(#error) => {
                return ::core::result::Result::Err(#private::into_error(#error));
            }
        }
    }
}
