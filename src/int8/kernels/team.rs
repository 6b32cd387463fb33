//! The threads of one int8 forward pass: a team that splits each layer without waking anyone.
//!
//! A MobileNetV2 forward at batch 1 is ~60 layers of 10–100 µs each. Handing every layer to
//! rayon (`par_iter`) costs a steal, and a wake-up when the other workers have gone to sleep
//! between layers: a few µs per layer on a 2-core machine, several percent of the pass.
//! [`on_team`] instead occupies every thread of rayon's pool for the whole pass
//! (`rayon::broadcast`): the first runs the pass, the others spin on a shared job slot, and
//! `parallel_for` publishes each layer's tasks there, as the thread pools of onnxruntime and
//! OpenMP runtimes do. Outside a team (a kernel called on its own), `parallel_for` falls
//! back to rayon.
//!
//! The slot is one atomic word, `epoch << 32 | tasks << 16 | next`: a helper claims task
//! `next` of the job it saw by a compare-and-swap on the word it read, so it never runs a task
//! of a job that has since been replaced; the caller returns only once every claimed task has
//! finished, which keeps the borrowed closure alive while any helper can call it.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// The most tasks one [`parallel_for`] call hands the team (16 bits of the slot word).
const MAX_TASKS: usize = u16::MAX as usize;
/// Spins between yields while a helper waits for a job: yielding lets an oversubscribed
/// machine run the caller, spinning keeps the wake-up at a few hundred ns otherwise.
const SPINS_PER_YIELD: u32 = 1 << 12;

type Task<'a> = dyn Fn(usize) + Sync + 'a;

struct Team {
    /// `epoch << 32 | tasks << 16 | next`.
    slot: AtomicU64,
    /// The current job's closure (a `*const &Task` on the caller's stack).
    job: AtomicPtr<()>,
    /// Tasks of the current job finished (or panicked).
    finished: AtomicUsize,
    panicked: AtomicBool,
    /// Set when the pass is over: helpers return.
    over: AtomicBool,
}

thread_local! {
    /// The team this thread leads, while it runs a pass under [`on_team`].
    static LEADING: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
}

/// Runs `f` with every thread of rayon's pool as its team (see the module docs); at once, as a
/// plain call, when the pool has one thread or this thread already leads a team.
pub fn on_team<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_num_threads() <= 1 || !LEADING.with(Cell::get).is_null() {
        return f();
    }
    let team = Team {
        slot: AtomicU64::new(0),
        job: AtomicPtr::new(std::ptr::null_mut()),
        finished: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
        over: AtomicBool::new(false),
    };
    let body = Mutex::new(Some(f));
    let leader = AtomicBool::new(false);
    let result = Mutex::new(None);
    rayon::broadcast(|_| {
        // Whichever thread starts first leads: the others may still be finishing other work.
        if leader.swap(true, Ordering::AcqRel) {
            team.help();
            return;
        }
        let f = body.lock().unwrap().take().expect("one leader");
        let _over = SetOnDrop(&team.over);
        LEADING.with(|l| l.set(&team));
        let r = catch_unwind(AssertUnwindSafe(f));
        LEADING.with(|l| l.set(std::ptr::null()));
        *result.lock().unwrap() = Some(r);
    });
    match result.into_inner().unwrap().expect("the leader ran") {
        Ok(r) => r,
        Err(panic) => resume_unwind(panic),
    }
}

struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `f(0)`, …, `f(tasks − 1)`, spread over this thread's team (or rayon's pool outside
/// one), and returns when all have run.
pub(crate) fn parallel_for(tasks: usize, f: impl Fn(usize) + Sync) {
    let team = LEADING.with(Cell::get);
    if tasks <= 1 {
        (0..tasks).for_each(f);
    } else if team.is_null() || tasks > MAX_TASKS {
        use rayon::prelude::*;
        (0..tasks).into_par_iter().for_each(&f);
    } else {
        // SAFETY: `LEADING` points at the team of the `on_team` call running on this thread,
        // which outlives this call.
        unsafe { &*team }.run(tasks, &f);
    }
}

impl Team {
    /// Publishes `f` for `tasks` tasks, runs what the helpers leave, waits for theirs.
    fn run(&self, tasks: usize, f: &Task<'_>) {
        // Every task of the previous job has finished, so no helper holds its closure.
        let epoch = (self.slot.load(Ordering::Relaxed) >> 32) + 1;
        self.finished.store(0, Ordering::Relaxed);
        self.job
            .store(&f as *const &Task<'_> as *mut (), Ordering::Relaxed);
        let word = epoch << 32 | (tasks as u64) << 16;
        self.slot.store(word, Ordering::Release);
        self.work(word);
        let mut spins = 0u32;
        while self.finished.load(Ordering::Acquire) < tasks {
            pause(&mut spins);
        }
        if self.panicked.swap(false, Ordering::Relaxed) {
            panic!("an int8 kernel task panicked on another thread");
        }
    }

    /// Claims and runs tasks of the job published as `seen` until none is left.
    fn work(&self, mut seen: u64) {
        loop {
            let (tasks, next) = ((seen >> 16) & 0xFFFF, seen & 0xFFFF);
            if next >= tasks {
                return;
            }
            match self.slot.compare_exchange_weak(
                seen,
                seen + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    // SAFETY: the claim succeeded on the word published with this job, so the
                    // job is still current and its caller waits for this task before its
                    // closure goes out of scope.
                    let f = unsafe { *(self.job.load(Ordering::Acquire) as *const &Task<'_>) };
                    if catch_unwind(AssertUnwindSafe(|| f(next as usize))).is_err() {
                        self.panicked.store(true, Ordering::Relaxed);
                    }
                    self.finished.fetch_add(1, Ordering::Release);
                    seen += 1;
                }
                // Another claim came first, or a new job replaced this one: go on from there.
                Err(now) => seen = now,
            }
        }
    }

    /// A helper's loop: waits for each new job and works on it until the pass is over.
    fn help(&self) {
        let mut last_epoch = 0;
        let mut spins = 0u32;
        while !self.over.load(Ordering::Acquire) {
            let seen = self.slot.load(Ordering::Acquire);
            if seen >> 32 != last_epoch {
                last_epoch = seen >> 32;
                self.work(seen);
                spins = 0;
            } else {
                pause(&mut spins);
            }
        }
    }
}

fn pause(spins: &mut u32) {
    *spins += 1;
    if spins.is_multiple_of(SPINS_PER_YIELD) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::{on_team, parallel_for};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// Every task of every job runs exactly once, jobs back to back of every size, and the
    /// pass's value comes back.
    #[test]
    fn each_task_runs_once_per_job() {
        let counts: Vec<AtomicUsize> = (0..300).map(|_| AtomicUsize::new(0)).collect();
        let value = pool(3).install(|| {
            on_team(|| {
                for tasks in (0..=300).chain([2, 1, 0, 300]) {
                    for c in &counts {
                        c.store(0, Ordering::Relaxed);
                    }
                    parallel_for(tasks, |i| {
                        counts[i].fetch_add(1, Ordering::Relaxed);
                    });
                    for (i, c) in counts.iter().enumerate() {
                        assert_eq!(c.load(Ordering::Relaxed), (i < tasks) as usize, "{tasks}");
                    }
                }
                42
            })
        });
        assert_eq!(value, 42);
    }

    /// A panicking task, on whichever thread, ends the pass with a panic and leaves the pool
    /// usable; a nested `on_team` is a plain call.
    #[test]
    fn panics_reach_the_caller_and_nesting_is_plain() {
        let pool = pool(2);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| on_team(|| parallel_for(64, |i| assert!(i != 37, "task 37"))))
        }));
        assert!(caught.is_err());
        let sum = AtomicUsize::new(0);
        pool.install(|| {
            on_team(|| {
                on_team(|| {
                    parallel_for(10, |i| {
                        sum.fetch_add(i, Ordering::Relaxed);
                    })
                })
            })
        });
        assert_eq!(sum.into_inner(), 45);
    }
}
