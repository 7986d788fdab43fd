//! Checks over the parsed arguments and the function, all reported at once.
//!
//! Parsing (`args.rs`) only knows the options one by one; here we look at
//! them together and at the function they decorate: literal names and
//! prefixes, `timeout` with `blocking = false`, `shared` with `permits`,
//! options that need the function to return `Result`, `const fn`, and the
//! prefix of an alias.
//! The outcome is a [`Checked`] model that `expand.rs` turns into code.

use proc_macro2::Span;
use syn::{
    AngleBracketedGenericArguments, GenericArgument, PathArguments, ReturnType, Type,
    TypeParamBound,
};

use crate::args::{StrArg, SynchronizedArgs, combine};
use crate::item::MaybeItemFn;

/// What kind of function is decorated, which decides where the guard goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// An ordinary function: the guard is taken at the top of its body.
    Sync,
    /// `async fn`: the guard is awaited at the top of its body.
    AsyncFn,
    /// A plain `fn` returning `impl Future<Output = ..>`: the guard is moved
    /// into the returned future.
    ImplFuture,
    /// A plain `fn` returning `Pin<Box<dyn Future<Output = ..>>>` (or a
    /// `BoxFuture`): as [`Shape::ImplFuture`], boxed again.
    BoxedFuture,
}

/// The prefix a call uses, when it is fixed before the arguments are read.
#[derive(Clone, Copy)]
pub(crate) struct Alias<'a> {
    /// The alias attribute's name, e.g. `nova_synchronized`.
    pub(crate) name: &'a str,
    /// Its fixed prefix, e.g. `nova-`.
    pub(crate) prefix: &'a str,
}

/// The validated model handed to `expand.rs`.
pub(crate) struct Checked {
    pub(crate) shape: Shape,
    /// Whether the value the caller finally gets (the return value, or the
    /// future's output) is a `Result`, so that lock errors can go there.
    pub(crate) returns_result: bool,
}

/// Runs every check and returns all failures combined.
pub(crate) fn check(
    args: &SynchronizedArgs,
    func: &MaybeItemFn,
    alias: Option<Alias<'_>>,
) -> syn::Result<Checked> {
    let mut errors = None;
    check_names(args, alias, &mut errors);

    if let Some(constness) = &func.sig.constness {
        let message = "#[synchronized] cannot be used on a `const fn`: a lock cannot be taken \
                       during constant evaluation";
        combine(&mut errors, syn::Error::new(constness.span, message));
    }

    if let (Some(timeout), Some(blocking)) = (&args.timeout, &args.blocking)
        && !blocking.value.value
    {
        let message = "`timeout` and `blocking = false` contradict each other: keep one of them";
        combine(&mut errors, syn::Error::new(timeout.keyword.span, message));
    }

    if let (Some(shared), Some(_)) = (&args.shared, &args.permits) {
        let message = "`shared` and `permits` cannot be combined: a counted semaphore has no \
                       shared (reader) mode, every holder takes one permit; drop `shared`, or \
                       drop `permits` for a reader/writer lock";
        combine(&mut errors, syn::Error::new(shared.span, message));
    }

    let (shape, output) = shape_of(func);
    let returns_result = output.is_some_and(is_result);
    if !returns_result {
        let what = match shape {
            Shape::Sync | Shape::AsyncFn => "the function's return type",
            Shape::ImplFuture | Shape::BoxedFuture => "the returned future's `Output`",
        };
        let found = match (output, shape) {
            (Some(ty), _) => format!(", not `{}`", type_to_string(ty)),
            (None, Shape::Sync | Shape::AsyncFn) => ", not `()`".to_owned(),
            (None, _) => " (write it out: `Future<Output = Result<..>>`)".to_owned(),
        };
        let needs_result = |option: &str, span: Span| {
            let message = format!(
                "`{option}` can fail to get the lock, so {what} must be \
                 `Result<_, E>` with `E: From<lockutils::LockError>`{found}"
            );
            syn::Error::new(span, message)
        };
        if let Some(timeout) = &args.timeout {
            combine(&mut errors, needs_result("timeout", timeout.keyword.span));
        }
        if let Some(blocking) = args.blocking.as_ref().filter(|b| !b.value.value) {
            let span = blocking.keyword.span;
            combine(&mut errors, needs_result("blocking = false", span));
        }
    }

    match errors {
        Some(errors) => Err(errors),
        None => Ok(Checked {
            shape,
            returns_result,
        }),
    }
}

/// Checks a literal name and prefix (both now, as far as they are known),
/// and that an alias's prefix is not overridden.
fn check_names(args: &SynchronizedArgs, alias: Option<Alias<'_>>, errors: &mut Option<syn::Error>) {
    let mut prefix = alias.map(|a| a.prefix.to_owned());
    if let (Some(alias), Some((keyword, _))) = (alias, &args.prefix) {
        let message = format!(
            "`prefix` is fixed by the alias `{}` (to {:?}): remove it, or use \
             #[lockutils::synchronized(..., prefix = ...)]",
            alias.name, alias.prefix
        );
        combine(errors, syn::Error::new(keyword.span, message));
    } else if let Some((_, value)) = &args.prefix {
        prefix = match value {
            StrArg::Lit(lit) => Some(lit.value()),
            StrArg::Path(_) => None,
        };
    } else {
        prefix.get_or_insert_with(String::new);
    }

    if let Some(prefix) = &prefix
        && let Err(problem) = lockutils_name::check_prefix(prefix)
    {
        let span = match (&args.prefix, alias) {
            (Some((_, value)), None) => value.span(),
            _ => Span::call_site(),
        };
        combine(errors, syn::Error::new(span, problem.message()));
        return;
    }

    if let StrArg::Lit(name) = &args.name {
        let name_value = name.value();
        let checked = match &prefix {
            Some(prefix) => lockutils_name::check(prefix, &name_value),
            None => lockutils_name::check_name(&name_value),
        };
        if let Err(problem) = checked {
            combine(errors, syn::Error::new(name.span(), problem.message()));
        }
    }
}

/// Classifies the function and finds the type its caller finally gets:
/// the return type, or the `Output` of the returned future. `None` means
/// `()` (no return type) or an `Output` we cannot see.
fn shape_of(func: &MaybeItemFn) -> (Shape, Option<&Type>) {
    let ty = match &func.sig.output {
        ReturnType::Default => return (shape_for_unit(func), None),
        ReturnType::Type(_, ty) => strip(ty),
    };
    if func.sig.asyncness.is_some() {
        return (Shape::AsyncFn, Some(ty));
    }
    if let Type::ImplTrait(imp) = ty {
        for bound in &imp.bounds {
            if let TypeParamBound::Trait(t) = bound {
                let last = t.path.segments.last();
                if last.is_some_and(|s| s.ident == "Future") {
                    let output = last.and_then(|s| future_output(&s.arguments));
                    return (Shape::ImplFuture, output);
                }
            }
        }
        return (Shape::Sync, Some(ty));
    }
    match boxed_future_output(ty) {
        Some(output) => (Shape::BoxedFuture, output),
        None => (Shape::Sync, Some(ty)),
    }
}

fn shape_for_unit(func: &MaybeItemFn) -> Shape {
    if func.sig.asyncness.is_some() {
        Shape::AsyncFn
    } else {
        Shape::Sync
    }
}

/// For `Pin<Box<dyn Future<Output = X> + ..>>`, `BoxFuture<'a, X>` and
/// `LocalBoxFuture<'a, X>`: `Some(Some(X))`; `Some(None)` if it is such a
/// type but `X` cannot be seen; `None` for any other type.
fn boxed_future_output(ty: &Type) -> Option<Option<&Type>> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident == "BoxFuture" || last.ident == "LocalBoxFuture" {
        let output = generic_args(&last.arguments).and_then(|args| {
            args.args.iter().find_map(|arg| match arg {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
        });
        return Some(output);
    }
    if last.ident != "Pin" {
        return None;
    }
    let inner = single_type_arg(&last.arguments)?;
    let Type::Path(boxed) = inner else {
        return None;
    };
    let boxed = boxed.path.segments.last()?;
    if boxed.ident != "Box" {
        return None;
    }
    let Type::TraitObject(object) = single_type_arg(&boxed.arguments)? else {
        return None;
    };
    object.bounds.iter().find_map(|bound| match bound {
        TypeParamBound::Trait(t) => {
            let last = t.path.segments.last()?;
            (last.ident == "Future").then(|| future_output(&last.arguments))
        }
        _ => None,
    })
}

fn generic_args(args: &PathArguments) -> Option<&AngleBracketedGenericArguments> {
    match args {
        PathArguments::AngleBracketed(args) => Some(args),
        _ => None,
    }
}

fn single_type_arg(args: &PathArguments) -> Option<&Type> {
    generic_args(args)?.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(t) => Some(strip(t)),
        _ => None,
    })
}

/// `X` of `Future<Output = X>`.
fn future_output(args: &PathArguments) -> Option<&Type> {
    generic_args(args)?.args.iter().find_map(|arg| match arg {
        GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(strip(&assoc.ty)),
        _ => None,
    })
}

/// Looks through parentheses and invisible groups.
fn strip(ty: &Type) -> &Type {
    match ty {
        Type::Paren(inner) => strip(&inner.elem),
        Type::Group(inner) => strip(&inner.elem),
        other => other,
    }
}

/// `Result<..>`, `io::Result<T>`, `std::result::Result<T, E>`, ...: any
/// path type whose last segment is `Result`.
fn is_result(ty: &Type) -> bool {
    match strip(ty) {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "Result"),
        _ => false,
    }
}

fn type_to_string(ty: &Type) -> String {
    let text = quote::ToTokens::to_token_stream(ty).to_string();
    // TokenStream's Display spaces every token; tighten the common cases.
    text.replace(" < ", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace(" :: ", "::")
        .replace("& ", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(func: MaybeItemFn) -> (Shape, bool) {
        let (shape, output) = shape_of(&func);
        (shape, output.is_some_and(is_result))
    }

    #[test]
    fn shapes() {
        use Shape::*;
        assert_eq!(
            shape(syn::parse_quote!(
                fn f() {}
            )),
            (Sync, false)
        );
        assert_eq!(
            shape(syn::parse_quote!(
                fn f() -> io::Result<()> {}
            )),
            (Sync, true)
        );
        assert_eq!(
            shape(syn::parse_quote!(
                async fn f() {}
            )),
            (AsyncFn, false)
        );
        assert_eq!(
            shape(syn::parse_quote!(
                async fn f() -> Result<u8, E> {}
            )),
            (AsyncFn, true)
        );
        assert_eq!(
            shape(syn::parse_quote!(
                fn f() -> impl Iterator<Item = u8> {}
            )),
            (Sync, false)
        );
        assert_eq!(
            shape(syn::parse_quote!(
                fn f() -> impl Send + core::future::Future<Output = Result<(), E>> {}
            )),
            (ImplFuture, true)
        );
        assert_eq!(
            shape(syn::parse_quote!(
                fn f(&self) -> Pin<Box<dyn Future<Output = u8> + Send + '_>> {}
            )),
            (BoxedFuture, false)
        );
        assert_eq!(
            shape(syn::parse_quote!(
                fn f() -> std::pin::Pin<std::boxed::Box<dyn Future<Output = Result<(), E>>>> {}
            )),
            (BoxedFuture, true)
        );
        assert_eq!(
            shape(syn::parse_quote!(
                fn f() -> BoxFuture<'static, Result<(), E>> {}
            )),
            (BoxedFuture, true)
        );
        assert_eq!(
            shape(syn::parse_quote!(
                fn f() -> Pin<Box<dyn Iterator<Item = u8>>> {}
            )),
            (Sync, false)
        );
        assert_eq!(
            shape(syn::parse_quote!(
                fn f() -> Pin<&mut u8> {}
            )),
            (Sync, false)
        );
    }

    #[test]
    fn result_detection_looks_at_the_last_segment() {
        assert!(is_result(&syn::parse_quote!(std::io::Result<u8>)));
        assert!(is_result(&syn::parse_quote!((Result<u8, String>))));
        assert!(!is_result(&syn::parse_quote!(Option<Result<u8, String>>)));
        assert!(!is_result(&syn::parse_quote!(&Result<u8, String>)));
    }
}
