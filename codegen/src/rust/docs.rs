//! IDL doc comments as `#[doc]` attributes that rustdoc reads as written.

use proc_macro2::TokenStream;
use quote::quote;

/// `#[doc = " line"]` for each doc line (with the leading space rustdoc
/// and prettyplease expect), made safe for rustdoc: outside code, brackets
/// are escaped (no broken intra-doc links) and indentation is dropped (no
/// accidental indented code block); an opening code fence without a
/// language becomes ```` ```text ```` (no accidental doctest).
pub(super) fn docs(lines: &[String]) -> TokenStream {
    let mut in_fence = false;
    let attrs = lines.iter().map(|l| {
        let line = sanitize_doc(l, &mut in_fence);
        let text = if line.is_empty() {
            String::new()
        } else {
            format!(" {line}")
        };
        quote!(#[doc = #text])
    });
    let out = quote!(#(#attrs)*);
    out
}

fn sanitize_doc(line: &str, in_fence: &mut bool) -> String {
    let trimmed = line.trim();
    if let Some(lang) = trimmed.strip_prefix("```") {
        let opening = !*in_fence;
        *in_fence = opening;
        return if opening && lang.trim().is_empty() {
            "```text".to_owned()
        } else {
            trimmed.to_owned()
        };
    }
    if *in_fence {
        return line.trim_end().to_owned();
    }
    let mut out = String::with_capacity(trimmed.len());
    let mut in_code = false;
    for c in trimmed.chars() {
        match c {
            '`' => {
                in_code = !in_code;
                out.push(c);
            }
            '[' | ']' if !in_code => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(lines: &[&str]) -> Vec<String> {
        let lines: Vec<String> = lines.iter().map(|s| (*s).to_owned()).collect();
        let tokens = docs(&lines);
        let item: syn::ItemStruct = match syn::parse2(quote!(#tokens struct X;)) {
            Ok(i) => i,
            Err(e) => panic!("{e}"),
        };
        item.attrs
            .iter()
            .filter_map(|a| match &a.meta {
                syn::Meta::NameValue(nv) => match &nv.value {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(s),
                        ..
                    }) => Some(s.value()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    #[test]
    fn docs_are_made_safe_for_rustdoc() {
        assert_eq!(
            rendered(&["see [Foo] and `[bar]`"]),
            vec![" see \\[Foo\\] and `[bar]`"]
        );
        assert_eq!(rendered(&["", "    indented"]), vec!["", " indented"]);
        assert_eq!(
            rendered(&["```", "  [x] stays", "```", "```rust", "y", "```"]),
            vec![" ```text", "   [x] stays", " ```", " ```rust", " y", " ```"]
        );
    }
}
