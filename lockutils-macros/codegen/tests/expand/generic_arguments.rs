// Arguments naming `Self` or the function's generic parameters cannot be
// used in a `static` (E0401): the spec is an inline `const` block and the
// lock is looked up on every call.

struct S;

impl S {
    #[synchronized(Self::NAME)]
    fn by_self(&self) {}
}

#[synchronized("n", prefix = T::PREFIX, permits = N)]
async fn by_generics<T: Tr, const N: u32>() {}

// Another type's const is not generic, even in a generic function: the
// call site keeps its `static`.
#[synchronized(Other::NAME, prefix = U::PREFIX)]
fn not_generic<T>() {}
