//! The `xborder` binary: parse the command line and hand over to `cli`.

/// jemalloc, not glibc's malloc: after a burst of hundreds of connections
/// glibc keeps the freed memory in fragmented arenas (the resident size
/// stayed 30–50 MiB above its baseline for good), while jemalloc hands it
/// back. The load test `load::three_hundred_clients_leave_memory_where_it_was`
/// checks it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its start (`MALLOC_CONF` in the
/// environment still overrides them): a background thread returns dirty
/// pages to the system after a second, rather than on the next allocation
/// after ten, so an idle gateway shrinks back soon after a burst.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    xborder::cli::main()
}
