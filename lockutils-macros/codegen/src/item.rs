//! The decorated function, parsed only as far as the expansion needs:
//! attributes, visibility and signature. The body stays a token stream
//! (like tokio-macros' `ItemFn` and tracing's `MaybeItemFn`): it is pasted
//! back untouched, so parsing it in full would only cost time and could
//! reject syntax that rustc itself accepts.

use proc_macro2::{Delimiter, Group, TokenStream};
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Signature, Visibility, braced, token};

pub(crate) struct MaybeItemFn {
    /// `#[...]` and doc comments before the function.
    pub(crate) outer_attrs: Vec<Attribute>,
    /// `#![...]` at the top of the body.
    pub(crate) inner_attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    brace: token::Brace,
    /// The body's statements, unparsed.
    pub(crate) body: TokenStream,
}

impl MaybeItemFn {
    /// The body with its braces, spanned as written.
    pub(crate) fn block(&self) -> Group {
        let mut block = Group::new(Delimiter::Brace, self.body.clone());
        block.set_span(self.brace.span.join());
        block
    }
}

impl Parse for MaybeItemFn {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let outer_attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        let content;
        let brace = braced!(content in input);
        let inner_attrs = content.call(Attribute::parse_inner)?;
        let body = content.parse()?;
        Ok(MaybeItemFn {
            outer_attrs,
            inner_attrs,
            vis,
            sig,
            brace,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn the_body_is_kept_as_written() {
        let f: MaybeItemFn = syn::parse2(quote! {
            /// Docs.
            #[inline]
            pub(crate) async unsafe fn f<'a, T: Clone>(x: &'a T) -> T where T: Send {
                #![allow(unused)]
                let y = x.clone(); return y;
            }
        })
        .unwrap();
        assert_eq!(f.outer_attrs.len(), 2);
        assert_eq!(f.inner_attrs.len(), 1);
        assert_eq!(f.sig.ident, "f");
        assert_eq!(
            f.body.to_string(),
            quote!(let y = x.clone(); return y;).to_string()
        );
    }

    #[test]
    fn a_function_without_a_body_is_not_one() {
        assert!(
            syn::parse2::<MaybeItemFn>(quote!(
                fn f();
            ))
            .is_err()
        );
        assert!(
            syn::parse2::<MaybeItemFn>(quote!(
                struct S;
            ))
            .is_err()
        );
    }
}
