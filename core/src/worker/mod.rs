//! The io_uring worker: one thread, one ring, a slab of tasks.
