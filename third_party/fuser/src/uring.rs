//! FUSE over io_uring (Linux 6.14+; added to this copy for strata).
//!
//! With `/dev/fuse` every request wakes whichever server thread has waited longest, often on
//! another CPU than the process that asked. Over io_uring the kernel keeps one queue per CPU
//! and hands a request to the queue of the CPU it was made on; each queue is served by a
//! thread pinned to that CPU, so a request and its answer stay where the caller runs.
//!
//! The session still reads `/dev/fuse` for what the kernel keeps sending there (FORGET,
//! INTERRUPT, requests made before every queue was registered).
//!
//! Per ring entry the kernel writes the request's `fuse_in_header` and its first argument
//! (the per-operation header) into a header buffer and the remaining arguments into a payload
//! buffer. The entry's request is put back together in the layout `/dev/fuse` reads give, so
//! the usual parser and dispatch serve it. The reply's header goes back into the header
//! buffer and its arguments into the payload buffer, and one COMMIT_AND_FETCH both answers
//! and asks for the next request.

use std::cell::Cell;
use std::io;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::Mutex;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::error;
use log::warn;

use crate::Filesystem;
use crate::channel::ChannelSender;
use crate::reply::ReplySender;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
const IORING_ENTER_GETEVENTS: u32 = 1;
/// `struct fuse_in_header`.
const IN_HEADER: usize = 40;
/// `struct fuse_out_header`.
const OUT_HEADER: usize = 16;
/// In-flight requests per queue: one being served, one waiting in the kernel.
const DEPTH: usize = 2;
/// Serving threads at most. Past this many CPUs a thread serves several queues in one
/// ring, unpinned: a mount costs a bounded number of threads on a big machine.
const MAX_THREADS: usize = 16;

/// `struct fuse_uring_req_header`: the request's (or reply's) header, the per-operation
/// header, and the entry's bookkeeping.
#[repr(C)]
struct EntryHeaders {
    in_out: [u8; 128],
    op_in: [u8; 128],
    flags: u64,
    commit_id: u64,
    payload_sz: u32,
    padding: u32,
    reserved: u64,
}

/// `struct iovec`, kept as addresses (the buffers belong to the same [`Entry`]).
#[repr(C)]
struct Iovec {
    base: u64,
    len: u64,
}

/// One ring entry's buffers, registered with the kernel by address: they never move.
struct Entry {
    headers: Box<EntryHeaders>,
    payload: Box<[u8]>,
    iov: Box<[Iovec; 2]>,
}

/// A thread's ring and the entries it has registered, for one queue (pinned to its CPU)
/// or, on machines with more CPUs than [`MAX_THREADS`], several.
struct Queue {
    /// This ring's number: which thread serves it.
    id: usize,
    /// The queue (CPU) each entry is registered for.
    qids: Vec<u16>,
    ring: Mutex<IoUring<squeue::Entry128, cqueue::Entry>>,
    /// The entries' buffers; the kernel writes into them while it owns an entry, and the
    /// queue's thread (or a reply) only touches an entry the kernel has handed over.
    entries: Vec<Mutex<Entry>>,
    dev: ChannelSender,
    dev_fd: i32,
}

thread_local! {
    /// The ring this thread serves: its replies are submitted with its next wait.
    static SERVING: Cell<Option<usize>> = const { Cell::new(None) };
}

/// `struct fuse_uring_cmd_req`, in the SQE's 80 command bytes.
fn cmd_req(qid: u16, commit_id: u64) -> [u8; 80] {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    cmd
}

impl Queue {
    fn sqe(&self, cmd_op: u32, entry: usize, commit_id: u64, iov: Option<u64>) -> squeue::Entry128 {
        let mut op = opcode::UringCmd80::new(types::Fd(self.dev_fd), cmd_op)
            .cmd(cmd_req(self.qids[entry], commit_id));
        if let Some(addr) = iov {
            op = op.addr(Some(addr));
        }
        let sqe = op.build().user_data(entry as u64);
        if iov.is_none() {
            return sqe;
        }
        // The io-uring crate's URING_CMD has no `len`; REGISTER needs it: the number of
        // iovecs (header and payload).
        // SAFETY: `squeue::Entry128` is `repr(C)`: the kernel's 64-byte `io_uring_sqe`, whose
        // `len` is the u32 at offset 24, then 64 bytes of command data.
        unsafe {
            let mut raw: [u8; 128] = std::mem::transmute(sqe);
            raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
            std::mem::transmute::<[u8; 128], squeue::Entry128>(raw)
        }
    }

    fn push(&self, sqe: &squeue::Entry128) -> io::Result<()> {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the buffers an SQE names live in `self.entries` as long as the queue.
        unsafe { ring.submission().push(sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        if SERVING.get() != Some(self.id) {
            ring.submit()?;
        }
        Ok(())
    }

    /// Answers the request in `entry`: header and arguments into its buffers, then
    /// COMMIT_AND_FETCH. A reply that does not fit is answered with EIO: an entry never
    /// committed would hold its request, and its caller, forever.
    fn reply(&self, entry: usize, data: &[IoSlice<'_>]) -> io::Result<()> {
        match self.fill(entry, data) {
            Ok(commit_id) => self.push(&self.sqe(CMD_COMMIT_AND_FETCH, entry, commit_id, None)),
            Err(e) => {
                self.fail(entry, libc::EIO)?;
                Err(e)
            }
        }
    }

    /// Answers the request in `entry` with error `errno`.
    fn fail(&self, entry: usize, errno: i32) -> io::Result<()> {
        let commit_id = {
            let mut e = self.entries[entry]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let unique: [u8; 8] = e.headers.in_out[8..16].try_into().expect("8 bytes");
            e.headers.in_out[..4].copy_from_slice(&(OUT_HEADER as u32).to_ne_bytes());
            e.headers.in_out[4..8].copy_from_slice(&(-errno).to_ne_bytes());
            e.headers.in_out[8..16].copy_from_slice(&unique);
            e.headers.payload_sz = 0;
            e.headers.commit_id
        };
        self.push(&self.sqe(CMD_COMMIT_AND_FETCH, entry, commit_id, None))
    }

    /// Writes a reply into `entry`'s buffers; returns the commit id.
    fn fill(&self, entry: usize, data: &[IoSlice<'_>]) -> io::Result<u64> {
        let commit_id = {
            let mut e = self.entries[entry]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let (header, args) = data
                .split_first()
                .ok_or_else(|| io::Error::other("empty reply"))?;
            if header.len() != OUT_HEADER {
                return Err(io::Error::other("reply without a FUSE out header"));
            }
            e.headers.in_out[..OUT_HEADER].copy_from_slice(header);
            let mut n = 0;
            for a in args {
                let end = n + a.len();
                if end > e.payload.len() {
                    return Err(io::Error::other("reply larger than the ring's payload"));
                }
                e.payload[n..end].copy_from_slice(a);
                n = end;
            }
            e.headers.payload_sz = n as u32;
            e.headers.commit_id
        };
        Ok(commit_id)
    }

    /// The request in `entry`, in `/dev/fuse`'s layout.
    fn request(&self, entry: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        let e = self.entries[entry]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let h = &e.headers;
        let len = u32::from_ne_bytes(h.in_out[..4].try_into().expect("4 bytes")) as usize;
        let payload = h.payload_sz as usize;
        let op_header = len
            .checked_sub(IN_HEADER + payload)
            .filter(|&n| n <= h.op_in.len() && payload <= e.payload.len())
            .ok_or_else(|| io::Error::other("malformed ring request"))?;
        buf.clear();
        buf.extend_from_slice(&h.in_out[..IN_HEADER]);
        buf.extend_from_slice(&h.op_in[..op_header]);
        buf.extend_from_slice(&e.payload[..payload]);
        Ok(())
    }
}

/// Replies to a request that came through a ring queue.
#[derive(Clone)]
pub(crate) struct RingReply {
    queue: Arc<Queue>,
    entry: usize,
}

impl std::fmt::Debug for RingReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let qid = self.queue.qids[self.entry];
        write!(f, "RingReply(qid {qid}, entry {})", self.entry)
    }
}

impl RingReply {
    pub(crate) fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        self.queue.reply(self.entry, data)
    }

    pub(crate) fn dev(&self) -> &ChannelSender {
        &self.queue.dev
    }
}

/// The kernel's number of queues: one per possible CPU (`num_possible_cpus`), which may be
/// more than are present. Requests wait until every queue is registered.
fn possible_cpus() -> io::Result<usize> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for range in list.trim().split(',') {
        let last = range.rsplit('-').next().unwrap_or(range);
        let last: usize = last
            .parse()
            .map_err(|_| io::Error::other(format!("reading possible CPUs {list:?}")))?;
        n = n.max(last + 1);
    }
    Ok(n.max(1))
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu < libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
            // A CPU outside this process's cpuset cannot be pinned to: the queue is then
            // served from wherever the thread runs.
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

fn new_queue(
    id: usize,
    queues: &[u16],
    dev: &ChannelSender,
    dev_fd: i32,
    payload: usize,
) -> io::Result<Arc<Queue>> {
    let n = DEPTH * queues.len();
    let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
        .setup_cqsize(2 * n as u32)
        .build(n as u32)?;
    let qids: Vec<u16> = queues.iter().flat_map(|&q| [q; DEPTH]).collect();
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let mut headers = Box::new(EntryHeaders {
            in_out: [0; 128],
            op_in: [0; 128],
            flags: 0,
            commit_id: 0,
            payload_sz: 0,
            padding: 0,
            reserved: 0,
        });
        let mut payload = vec![0u8; payload].into_boxed_slice();
        let iov = Box::new([
            Iovec {
                base: &mut *headers as *mut EntryHeaders as u64,
                len: std::mem::size_of::<EntryHeaders>() as u64,
            },
            Iovec {
                base: payload.as_mut_ptr() as u64,
                len: payload.len() as u64,
            },
        ]);
        entries.push(Mutex::new(Entry {
            headers,
            payload,
            iov,
        }));
    }
    Ok(Arc::new(Queue {
        id,
        qids,
        ring: Mutex::new(ring),
        entries,
        dev: dev.clone(),
        dev_fd,
    }))
}

impl Queue {
    /// Hands every entry to the kernel, from the thread that serves the queue: the kernel
    /// fills an entry in the context of the task that handed it over.
    fn register(&self) -> io::Result<()> {
        (0..self.entries.len()).try_for_each(|i| self.register_entry(i))
    }

    fn register_entry(&self, entry: usize) -> io::Result<()> {
        let addr = {
            let e = self.entries[entry]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            e.iov.as_ptr() as u64
        };
        self.push(&self.sqe(CMD_REGISTER, entry, 0, Some(addr)))
    }
}

/// Starts a thread per CPU, pinned to it, that registers that CPU's queue and serves it.
/// Returns the threads, which end when the filesystem is unmounted. On an error the kernel
/// is told to go on over `/dev/fuse` alone (it holds requests back until every queue is
/// registered).
pub(crate) fn start<FS: Filesystem + 'static>(
    se: &SessionEventLoop<FS>,
    payload: usize,
) -> io::Result<Vec<std::thread::JoinHandle<io::Result<()>>>> {
    let dev = se.ch.sender();
    let dev_fd = se.ch.as_fd().as_raw_fd();
    let started = (|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        let cpus = possible_cpus()?;
        let n = cpus.min(MAX_THREADS);
        for id in 0..n {
            let queues: Vec<u16> = (id..cpus).step_by(n).map(|q| q as u16).collect();
            let q = new_queue(id, &queues, &dev, dev_fd, payload)?;
            let event_loop = se.for_thread(format!("fuser-ring-{id}"));
            let tx = tx.clone();
            let serve_queue = move || {
                if queues.len() == 1 {
                    pin_to(id);
                }
                SERVING.set(Some(q.id));
                let registered = q.register();
                let ok = registered.is_ok();
                let _ = tx.send(registered);
                if ok { serve(&q, &event_loop) } else { Ok(()) }
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("fuser-ring-{id}"))
                    .spawn(serve_queue)?,
            );
        }
        drop(tx);
        for registered in rx {
            registered?;
        }
        Ok(threads)
    })();
    if started.is_err() {
        give_up(dev_fd);
    }
    started
}

/// Makes the kernel give up on io_uring for this connection: a registration it must refuse
/// (a queue number past the last CPU) turns it off and releases the requests held back.
fn give_up(dev_fd: i32) {
    let Ok(mut ring) = IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(1) else {
        return;
    };
    let sqe = opcode::UringCmd80::new(types::Fd(dev_fd), CMD_REGISTER)
        .cmd(cmd_req(u16::MAX, 0))
        .build();
    // SAFETY: the command names no buffer.
    if unsafe { ring.submission().push(&sqe) }.is_ok() {
        let _ = ring.submit_and_wait(1);
    }
}

fn serve<FS: Filesystem>(q: &Arc<Queue>, se: &SessionEventLoop<FS>) -> io::Result<()> {
    let ring_fd = q.ring.lock().unwrap_or_else(|p| p.into_inner()).as_raw_fd();
    let mut done = Vec::with_capacity(2 * q.entries.len());
    let mut buf = Vec::new();
    // Which entries were last handed over by REGISTER (not by a commit).
    let mut registering = vec![true; q.entries.len()];
    loop {
        // Submits this thread's replies and waits for a request, without holding the ring
        // (a reply from another thread takes it). The count must be exact: the kernel skips
        // the wait when it submits fewer than asked.
        let pending = {
            let mut ring = q.ring.lock().unwrap_or_else(|p| p.into_inner());
            ring.submission().len() as u32
        };
        // SAFETY: io_uring_enter on our own ring; no argument pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                ring_fd,
                pending,
                1u32,
                IORING_ENTER_GETEVENTS,
                std::ptr::null::<libc::c_void>(),
                0usize,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        {
            let mut ring = q.ring.lock().unwrap_or_else(|p| p.into_inner());
            done.extend(
                ring.completion()
                    .map(|c| (c.user_data() as usize, c.result())),
            );
        }
        for (entry, res) in done.drain(..) {
            match res {
                0 => registering[entry] = false,
                // Unmounted: the kernel gives every entry back.
                r if r == -libc::ENOTCONN => return Ok(()),
                // A registration refused for good: the kernel has gone back to /dev/fuse.
                r if registering[entry] && r != -libc::EAGAIN && r != -libc::EINTR => {
                    return Err(io::Error::from_raw_os_error(-r));
                }
                // Not yet ready, or a commit the kernel no longer wanted (its request was
                // ended meanwhile): the entry is handed over again.
                r => {
                    if r != -libc::EAGAIN && r != -libc::EINTR {
                        warn!(
                            "qid {} entry {entry}: {}",
                            q.qids[entry],
                            io::Error::from_raw_os_error(-r)
                        );
                    }
                    registering[entry] = true;
                    q.register_entry(entry)?;
                    continue;
                }
            }
            // A request that cannot be read is answered, not dropped: its caller waits.
            let parsed = q.request(entry, &mut buf).and_then(|()| {
                let sender = ReplySender::Ring(RingReply {
                    queue: q.clone(),
                    entry,
                });
                RequestWithSender::new(sender, &buf)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "invalid request"))
            });
            match parsed {
                Ok(req) => req.dispatch(se),
                Err(e) => {
                    error!("qid {}: {e}", q.qids[entry]);
                    q.fail(entry, libc::EIO)?;
                }
            }
        }
    }
}
