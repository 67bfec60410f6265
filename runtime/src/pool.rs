//! The thread pool generated code runs its kernels on: created once, with one scratch buffer per
//! thread, and entered through `netc_parallel_for` with a kernel pointer and its table.
//!
//! Every thread of a launch, the caller included, claims chunks of its tasks until none are
//! left. Kernels are written so that each output element belongs to exactly one task and every
//! reduction runs in a fixed order inside it, so results do not depend on which thread ran a
//! chunk, nor on how many threads there are. Claiming (rather than a fixed share per thread)
//! keeps a busy machine from stalling a step: a worker the operating system has not scheduled
//! yet finds its work already done. Each thread first claims the chunks of its own share (the
//! same part of the tasks at every launch), then the others': kernels number their tasks along
//! memory, so a thread mostly reads what it wrote in the launches before, still in its own
//! cache. Each claim takes half of what is left of a share (guided scheduling), so chunks shrink
//! towards the end: the thread that runs out of work first waits for a short last chunk of the
//! other's, not a quarter of its share (resnet_small's step ran ~3% faster than with four equal
//! chunks per thread).
//!
//! Workers spin briefly on the job counter before sleeping: a training step launches hundreds
//! of kernels, many of them microseconds long, and a condition variable's wake-up costs about
//! as much as such a kernel; a launch signals the condition variable only when a worker sleeps
//! on it. What a launch itself costs, `benches/launch.rs` times.

use crate::buffer::Buffer;
use crate::Kernel;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Spins before a worker sleeps; a few tens of microseconds on this machine.
const SPINS: usize = 20_000;
/// The smallest chunk, as a share of a thread's tasks: small enough that the last chunks of a
/// launch, which one thread may finish while the other has nothing left, are short; large
/// enough that a kernel's fixed cost per chunk (zeroing its scratch) stays small. A
/// convolution of 64 images has 64 tasks: one image per chunk at the end, where 16 gave two
/// (resnet_small's step ran 2% faster on a busy host, in the median of 12 alternating pairs
/// of processes; under 1% when the host was quiet).
const FINEST_CHUNKS_PER_THREAD: i64 = 64;

/// One launch: its kernel and the tasks left to claim.
struct Job {
    kernel: Kernel,
    table: *const *mut f32,
    tasks: i64,
    /// The fewest tasks a claim takes (but the last of a share).
    least: i64,
    /// For each thread, the next task of its share to claim; at or past the share's end, none
    /// of it is left.
    next: Vec<OwnLine<AtomicI64>>,
    /// For each thread, the tasks it has finished.
    done: Vec<OwnLine<AtomicI64>>,
}

/// A value alone on its cache line (and the next, which the hardware prefetcher pairs with it):
/// each thread claims from its own share and counts what it has finished, so that a launch's
/// claims and counts do not pass one line between the cores; they did, several times per
/// launch, when the counters lay side by side.
#[repr(align(128))]
struct OwnLine<T>(T);

// The table is only dereferenced while the job has unclaimed tasks, and `run` does not return
// before every claimed task is finished.
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Job {
    /// A job of `tasks` tasks shared among `threads` threads, none claimed yet.
    fn new(kernel: Kernel, table: *const *mut f32, tasks: i64, threads: usize) -> Job {
        Job {
            kernel,
            table,
            tasks,
            least: (tasks / (threads as i64 * FINEST_CHUNKS_PER_THREAD)).max(1),
            next: (0..threads)
                .map(|thread| OwnLine(AtomicI64::new(Job::share_begin(tasks, threads, thread))))
                .collect(),
            done: (0..threads).map(|_| OwnLine(AtomicI64::new(0))).collect(),
        }
    }

    /// Whether every task is finished.
    fn finished(&self) -> bool {
        let done: i64 = self.done.iter().map(|d| d.0.load(Ordering::Acquire)).sum();
        done == self.tasks
    }

    /// The first task of `thread`'s share (and the end of the share of the thread before).
    fn share_begin(tasks: i64, threads: usize, thread: usize) -> i64 {
        tasks * thread as i64 / threads as i64
    }

    /// Claims and runs chunks of thread `index`'s share, then of the others', until none are
    /// left. A claim takes half of what is left of the share (but no less than `least`), so
    /// chunks shrink towards the end: whichever thread finishes first then waits at most for a
    /// short chunk of the other's.
    fn work(&self, index: usize, scratch: *mut f32) {
        let threads = self.next.len();
        for owner in (index..threads).chain(0..index) {
            let share_end = Job::share_begin(self.tasks, threads, owner + 1);
            let next = &self.next[owner].0;
            let mut begin = next.load(Ordering::Acquire);
            while begin < share_end {
                let half = (share_end - begin) / 2;
                let end = (begin + half.max(self.least)).min(share_end);
                if let Err(now) =
                    next.compare_exchange_weak(begin, end, Ordering::AcqRel, Ordering::Acquire)
                {
                    begin = now;
                    continue;
                }
                // SAFETY: `run`'s contract: the kernel accepts any disjoint split of its tasks,
                // and the table lives until every claimed task is done.
                unsafe { (self.kernel)(self.table, begin, end, scratch) };
                self.done[index].0.fetch_add(end - begin, Ordering::Release);
                begin = next.load(Ordering::Acquire);
            }
        }
    }
}

struct Shared {
    threads: usize,
    /// Bumped for each job; a worker joins the job whose number it has not seen.
    epoch: AtomicUsize,
    job: Mutex<Option<Arc<Job>>>,
    wake: Condvar,
    /// Workers asleep on `wake` (changed only under `job`'s lock): a launch wakes them only if
    /// there are any, since the wake-up is a system call even with nobody waiting, and the
    /// workers of a step are mostly spinning.
    sleepers: AtomicUsize,
    /// One per thread; each thread only ever touches its own.
    scratch: Vec<Buffer>,
    shutdown: AtomicBool,
}

/// The pool: `threads - 1` workers plus the thread that calls `run`.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// When profiling, the wall time of each launch since the last [`Pool::take_launch_times`].
    launch_times: Option<Mutex<Vec<Duration>>>,
}

impl Pool {
    /// The threads to run on when not told: every core.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// A pool of `threads` threads (at least 1), each with `scratch_floats` floats of scratch.
    pub fn new(threads: usize, scratch_floats: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            threads,
            epoch: AtomicUsize::new(0),
            job: Mutex::new(None),
            wake: Condvar::new(),
            sleepers: AtomicUsize::new(0),
            // NaN rather than zeros: a kernel that reads scratch it has not written then
            // shows it in its results, where tests see it.
            scratch: (0..threads)
                .map(|_| Buffer::filled(scratch_floats, f32::NAN))
                .collect(),
            shutdown: AtomicBool::new(false),
        });
        let workers = (1..threads)
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("netc-worker-{index}"))
                    .spawn(move || worker(&shared, index))
                    .expect("the operating system refused to start a thread")
            })
            .collect();
        Pool {
            shared,
            workers,
            launch_times: None,
        }
    }

    /// Starts or stops recording how long each launch takes.
    pub fn set_profiling(&mut self, on: bool) {
        self.launch_times = on.then(|| Mutex::new(Vec::new()));
    }

    /// The wall time of each launch, in order, since profiling started or this was last called.
    pub fn take_launch_times(&self) -> Vec<Duration> {
        self.launch_times.as_ref().map_or_else(Vec::new, |times| {
            std::mem::take(&mut *times.lock().unwrap_or_else(|e| e.into_inner()))
        })
    }

    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// Runs `tasks` tasks of `kernel` across the pool and returns when all are done.
    ///
    /// # Safety
    /// `kernel` must be safe to call with `table` on any disjoint split of `0..tasks`, from any
    /// thread, concurrently.
    pub unsafe fn run(&self, kernel: Kernel, table: *const *mut f32, tasks: i64) {
        match &self.launch_times {
            None => self.launch(kernel, table, tasks),
            Some(times) => {
                let started = Instant::now();
                self.launch(kernel, table, tasks);
                let elapsed = started.elapsed();
                times
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(elapsed);
            }
        }
    }

    /// [`Pool::run`], untimed.
    unsafe fn launch(&self, kernel: Kernel, table: *const *mut f32, tasks: i64) {
        let shared = &*self.shared;
        if tasks <= 0 {
            return;
        }
        if shared.threads == 1 || tasks == 1 {
            kernel(table, 0, tasks, shared.scratch[0].pointer());
            return;
        }
        let job = Arc::new(Job::new(kernel, table, tasks, shared.threads));
        {
            let mut current = shared.job.lock().unwrap_or_else(|e| e.into_inner());
            *current = Some(Arc::clone(&job));
            shared.epoch.fetch_add(1, Ordering::SeqCst);
            if shared.sleepers.load(Ordering::Relaxed) > 0 {
                shared.wake.notify_all();
            }
        }
        job.work(0, shared.scratch[0].pointer());
        // Only chunks other threads claimed and are still running remain.
        while !job.finished() {
            std::hint::spin_loop();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.job.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.epoch.fetch_add(1, Ordering::SeqCst);
            self.shared.wake.notify_all();
        }
        for worker in self.workers.drain(..) {
            worker.join().ok();
        }
    }
}

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        let mut spins = 0;
        while shared.epoch.load(Ordering::Acquire) == seen {
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                let guard = shared.job.lock().unwrap_or_else(|e| e.into_inner());
                if shared.epoch.load(Ordering::Acquire) == seen {
                    shared.sleepers.fetch_add(1, Ordering::Relaxed);
                    let _relocked = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                    shared.sleepers.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        seen = shared.epoch.load(Ordering::Acquire);
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let job = shared.job.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(job) = job {
            job.work(index, shared.scratch[index].pointer());
        }
    }
}

/// The entry point generated code calls: runs `tasks` tasks of `kernel` on `pool`.
///
/// # Safety
/// `pool` must point to a live `Pool`, and `kernel` and `table` must satisfy `Pool::run`.
#[no_mangle]
pub unsafe extern "C" fn netc_parallel_for(
    pool: *const Pool,
    kernel: Kernel,
    table: *const *mut f32,
    tasks: i64,
) {
    // A panic must not unwind into generated frames, which have no unwind information. Nothing
    // in `run` is expected to panic; if it does, the process stops with the message rather than
    // corrupting the step.
    if catch_unwind(AssertUnwindSafe(|| (*pool).run(kernel, table, tasks))).is_err() {
        eprintln!("internal error: the thread pool panicked inside a training step");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" fn mark(table: *const *mut f32, begin: i64, end: i64, scratch: *mut f32) {
        let out = *table;
        for i in begin..end {
            *scratch = i as f32;
            *out.add(i as usize) += 1.0 + *scratch - i as f32;
        }
    }

    #[test]
    fn every_task_runs_once_for_any_thread_count() {
        for threads in 1..=5 {
            let pool = Pool::new(threads, 4);
            for tasks in [0i64, 1, 2, 3, 7, 64, 1001] {
                let mut out = vec![0.0f32; tasks as usize];
                let table = [out.as_mut_ptr()];
                for _ in 0..3 {
                    unsafe { netc_parallel_for(&pool, mark, table.as_ptr(), tasks) };
                }
                assert!(
                    out.iter().all(|&v| v == 3.0),
                    "{threads} threads, {tasks} tasks"
                );
            }
        }
    }
}
