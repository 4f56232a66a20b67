//! PROVISIONAL: the io_uring ring wrapper.
