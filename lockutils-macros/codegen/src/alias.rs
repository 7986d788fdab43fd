//! `synchronized_with_prefix!`: a project's own attribute with a fixed prefix.

/// Defines a prefix alias of `#[synchronized]` in your own proc-macro crate,
/// like oslo's `synchronized_with_prefix("nova-")`.
///
/// ```ignore
/// // nova-macros/src/lib.rs (Cargo.toml: [lib] proc-macro = true,
/// // [dependencies] lockutils-codegen): the whole file
/// lockutils_codegen::synchronized_with_prefix!(pub fn nova_synchronized, "nova-");
/// ```
///
/// ```ignore
/// // in nova, which depends on lockutils and nova-macros:
/// #[nova_macros::nova_synchronized("iptables", external)]
/// fn apply_rules() { /* runs holding lock "nova-iptables" */ }
/// ```
///
/// The alias takes every argument of `#[synchronized]` except `prefix`,
/// which it fixes. Because the prefix is known when the alias expands, a
/// literal name is checked together with it (the full lock-file name must be
/// at most 255 bytes). A prefix holding `/` or a NUL byte fails the build of
/// the crate defining the alias.
///
/// Doc comments and other attributes written before `pub fn` are put on the
/// generated attribute function.
///
/// Where a separate proc-macro crate is not wanted, `prefix = CONST` on the
/// plain attribute does the same job, checked during constant evaluation.
#[macro_export]
macro_rules! synchronized_with_prefix {
    ($(#[$meta:meta])* $vis:vis fn $alias:ident, $prefix:literal $(,)?) => {
        $crate::__check_alias_prefix!($prefix);

        #[doc = ::core::concat!(
            "`#[", ::core::stringify!($alias), "(\"name\", ...)]`: lockutils' `#[synchronized]` ",
            "with the lock prefix fixed to `", $prefix, "`.",
        )]
        $(#[$meta])*
        #[proc_macro_attribute]
        $vis fn $alias(
            attr: ::proc_macro::TokenStream,
            item: ::proc_macro::TokenStream,
        ) -> ::proc_macro::TokenStream {
            $crate::synchronized_with_fixed_prefix(
                $prefix,
                ::core::stringify!($alias),
                attr.into(),
                item.into(),
            )
            .into()
        }
    };
}

/// Fails the build of the crate defining an alias whose prefix cannot be a
/// lock prefix.
///
/// ```
/// lockutils_codegen::__check_alias_prefix!("nova-");
/// ```
///
/// ```compile_fail,E0080
/// lockutils_codegen::__check_alias_prefix!("nova/");
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! __check_alias_prefix {
    ($prefix:literal) => {
        const _: () = match $crate::__name::check_prefix($prefix) {
            ::core::result::Result::Ok(()) => (),
            ::core::result::Result::Err(_) => ::core::panic!(
                "synchronized_with_prefix!: the prefix must not contain `/` or a NUL byte"
            ),
        };
    };
}
