//! PROVISIONAL: the invariant checker lives here.
