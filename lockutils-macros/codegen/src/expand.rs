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
//! A plain function returning a future gets its body evaluated by an
//! immediately called `move` closure (an early `return` in the body still
//! yields the future) and returns a new future that first awaits the lock,
//! then runs the original one.

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
    let site = call_site_static(args, func, alias, &private);
    let guard = Ident::new("__lockutils_guard", Span::mixed_site());
    let propagate = args.is_fallible() && checked.returns_result;

    let body = match checked.shape {
        Shape::Sync | Shape::AsyncFn => {
            let is_async = checked.shape == Shape::AsyncFn;
            let acquire = acquire(&private, propagate, is_async);
            let stmts = &func.body;
            quote! {
                let #guard = { #site #acquire };
                #stmts
            }
        }
        Shape::ImplFuture | Shape::BoxedFuture => {
            let acquire = acquire(&private, propagate, true);
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
    if boxed {
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

/// `static __LOCKUTILS_SITE: CallSite = CallSite::new(LockSpec::new(..)..);`
fn call_site_static(
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
    let spec = kind_options(args, spec, private);

    let site = site_ident();
    quote! {
        static #site: #private::CallSite = #private::CallSite::new(#spec);
    }
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

/// The expression that takes the lock and yields the guard.
fn acquire(private: &TokenStream, propagate: bool, is_async: bool) -> TokenStream {
    let site = site_ident();
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

#[cfg(test)]
mod tests {
    use crate::{synchronized, synchronized_with_fixed_prefix};
    use quote::quote;

    fn expand(attr: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> String {
        synchronized(attr, item).to_string()
    }

    #[test]
    fn private_path_carries_the_version() {
        let version = env!("CARGO_PKG_VERSION");
        let mut parts = version.split('.');
        let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
        assert_eq!(super::PRIVATE_MODULE, format!("__private_v{major}_{minor}"));
    }

    #[test]
    fn sync_infallible() {
        let out = expand(
            quote!("n"),
            quote!(
                pub fn f(x: u8) -> u8 {
                    x
                }
            ),
        );
        assert!(out.starts_with("pub fn f (x : u8) -> u8 { let __lockutils_guard = {"));
        assert!(out.contains(
            "static __LOCKUTILS_SITE : :: lockutils :: __private_v0_1 :: CallSite = :: lockutils :: __private_v0_1 \
             :: CallSite :: new (:: lockutils :: __private_v0_1 :: LockSpec :: new (\"n\" , \"\" , \
             :: core :: concat ! (:: core :: module_path ! () , \"::\" , \"f\")))"
        ));
        assert!(
            out.contains("__LOCKUTILS_SITE . acquire_or_panic () } ; x }"),
            "{out}"
        );
    }

    #[test]
    fn sync_fallible_result() {
        let out = expand(
            quote!(
                "n",
                prefix = "p",
                external,
                lock_path = "/l",
                timeout = "1ms",
                crate = c
            ),
            quote!(
                fn f() -> io::Result<()> {
                    Ok(())
                }
            ),
        );
        assert!(out.contains(
            "LockSpec :: new (\"n\" , \"p\" , :: core :: concat ! (:: core :: module_path ! () , \
             \"::\" , \"f\")) . external () . lock_path (\"/l\") . timeout_nanos (1000000u64)"
        ));
        assert!(out.contains("static __LOCKUTILS_SITE : c :: __private_v0_1 :: CallSite"));
        assert!(
            out.contains("match __LOCKUTILS_SITE . acquire () {"),
            "{out}"
        );
        assert!(out.contains(
            "return :: core :: result :: Result :: Err (c :: __private_v0_1 :: into_error (error))"
        ));
    }

    #[test]
    fn external_without_result_panics() {
        let out = expand(
            quote!("n", external),
            quote!(
                fn f() {}
            ),
        );
        assert!(
            out.contains("__LOCKUTILS_SITE . acquire_or_panic ()"),
            "{out}"
        );
    }

    #[test]
    fn const_name_and_nonblocking() {
        let out = expand(
            quote!(names::N, blocking = false, prefix = P),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(out.contains(
            "LockSpec :: new (:: lockutils :: __private_v0_1 :: LockName :: as_str (names :: N) , P ,"
        ));
        assert!(out.contains(". nonblocking ()"));
        assert!(
            out.contains("match __LOCKUTILS_SITE . acquire_async () . await {"),
            "{out}"
        );
    }

    #[test]
    fn async_fn_awaits_the_guard_in_the_body() {
        let out = expand(
            quote!("n"),
            quote!(
                async fn f() {}
            ),
        );
        assert!(
            out.starts_with("async fn f () { let __lockutils_guard ="),
            "{out}"
        );
        assert!(
            out.contains("__LOCKUTILS_SITE . acquire_async_or_panic () . await } ;"),
            "{out}"
        );
    }

    #[test]
    fn future_returning_fns_move_the_guard_into_the_future() {
        let out = expand(
            quote!("n"),
            quote!(
                fn f(&self) -> impl Future<Output = u8> + '_ {
                    async move { 1 }
                }
            ),
        );
        assert!(
            out.contains(
                "let __lockutils_future = (move || { async move { 1 } }) () ; async move { \
             let __lockutils_guard ="
            ),
            "{out}"
        );
        assert!(out.ends_with("__lockutils_future . await } }"), "{out}");

        let out = expand(
            quote!("n"),
            quote!(
                fn f(&self) -> Pin<Box<dyn Future<Output = u8> + Send + '_>> {
                    Box::pin(async move { 1 })
                }
            ),
        );
        assert!(out.contains(
            "(move || -> Pin < Box < dyn Future < Output = u8 > + Send + '_ > > { Box :: pin (async move { 1 }) }) ()"
        ), "{out}");
        assert!(
            out.contains(":: std :: boxed :: Box :: pin (async move {"),
            "{out}"
        );
    }

    #[test]
    fn kind_options_go_on_the_spec() {
        let out = expand(
            quote!("n", permits = 4, fair, external),
            quote!(
                fn f() {}
            ),
        );
        assert!(
            out.contains("\"f\")) . external () . fair () . permits (4u32))"),
            "{out}"
        );
        assert!(!out.contains("shared"), "{out}");
        let out = errors(
            quote!("n", shared, permits = limits::N, timeout = "1s"),
            quote!(
                fn f() {}
            ),
        );
        assert!(
            out.contains("`shared` and `permits` cannot be combined"),
            "{out}"
        );
        assert!(out.contains("`timeout` can fail"), "{out}");
        assert!(out.starts_with("fn f () { }"), "{out}");
        let out = expand(
            quote!("n", permits = limits::N),
            quote!(
                fn f() {}
            ),
        );
        assert!(
            out.contains(
                "CallSite :: new (:: lockutils :: __private_v0_1 :: LockSpec :: permits (:: lockutils :: \
                 __private_v0_1 :: LockSpec :: new (\"n\" ,"
            ),
            "{out}"
        );
        assert!(out.contains("\"f\")) , limits :: N))"), "{out}");
        let out = expand(
            quote!("n", shared),
            quote!(
                async fn f() {}
            ),
        );
        assert!(out.contains(". shared ())"), "{out}");
        assert!(out.contains("acquire_async_or_panic () . await"), "{out}");
    }

    #[test]
    fn alias_prefix_is_used() {
        let out = synchronized_with_fixed_prefix(
            "nova-",
            "nova_sync",
            quote!("n"),
            quote!(
                fn f() {}
            ),
        )
        .to_string();
        assert!(
            out.contains("LockSpec :: new (\"n\" , \"nova-\" ,"),
            "{out}"
        );
    }

    fn errors(attr: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> String {
        let out = expand(attr, item);
        assert!(out.contains("compile_error !"), "no error in {out}");
        out
    }

    #[test]
    fn errors_keep_the_function() {
        let out = errors(
            quote!(""),
            quote!(
                fn f() {}
            ),
        );
        assert!(out.starts_with("fn f () { }"), "{out}");
        assert!(out.contains("must not be empty"), "{out}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let out = errors(
            quote!("..", blocking = false, timeout = "1s"),
            quote!(
                const fn f() -> u8 {
                    1
                }
            ),
        );
        for needle in [
            "`.` or `..`",
            "`const fn`",
            "contradict",
            "`timeout` can fail",
            "`blocking = false` can fail",
        ] {
            assert!(out.contains(needle), "{needle} not in {out}");
        }
    }

    #[test]
    fn an_unseen_future_output_is_not_a_result() {
        let out = errors(
            quote!("n", timeout = "1s"),
            quote!(
                fn f() -> impl Future + Send {
                    async {}
                }
            ),
        );
        assert!(out.contains("write it out"), "{out}");
    }

    #[test]
    fn names_are_checked_with_their_prefix() {
        let long = "x".repeat(251);
        assert!(
            errors(
                quote!(#long, prefix = "nova"),
                quote!(
                    fn f() {}
                )
            )
            .contains("255")
        );
        assert!(
            errors(
                quote!("n\0"),
                quote!(
                    fn f() {}
                )
            )
            .contains("NUL")
        );
        assert!(
            errors(
                quote!("n", prefix = "a/b"),
                quote!(
                    fn f() {}
                )
            )
            .contains("prefix")
        );
        let out = synchronized_with_fixed_prefix(
            "nova-",
            "nova_sync",
            quote!("n", prefix = "x"),
            quote!(
                fn f() {}
            ),
        )
        .to_string();
        assert!(out.contains("fixed by the alias `nova_sync`"), "{out}");
    }

    #[test]
    fn non_functions_are_rejected() {
        assert!(
            errors(
                quote!("n"),
                quote!(
                    struct S;
                )
            )
            .contains("not on a struct")
        );
        assert!(
            errors(
                quote!("n"),
                quote!(
                    fn f(&self);
                )
            )
            .contains("body")
        );
        let out = errors(quote!("n"), quote!(|| {}));
        assert!(out.starts_with("{ :: core :: compile_error !"), "{out}");
        assert!(out.ends_with("; || { } }"), "{out}");
    }
}
