//! A linearizability checker for recorded client histories, in the style of
//! Wing & Gong, Lowe ("Testing for linearizability", 2017) and Porcupine.
//!
//! A history is a set of client operations, each with the time it was invoked
//! and, when the client learnt it, the time it returned and what it returned.
//! It is linearizable against a sequential [`Model`] when every operation can
//! be given one instant between its invoke and its return such that applying
//! the operations in the order of those instants to the model yields exactly
//! the outputs the clients saw. Real-time order follows: when `a` returned
//! strictly before `b` was invoked, `a` comes first; equal times count as
//! concurrent.
//!
//! **Algorithm.** Every operation contributes a *call* entry and a *return*
//! entry to one list sorted by time (calls before returns at equal times). A
//! depth-first search repeatedly picks a *candidate*, an operation whose call
//! lies before the earliest return still in the list, asks the model whether
//! it can take effect in the current state with the recorded output, and if
//! so removes both of its entries from the list ("lifts" it, as in dancing
//! links) and goes on from the new state. Reaching a return entry whose
//! operation is not linearized yet is a dead end: the search backtracks,
//! restores the previous state, puts the operation's entries back and tries
//! the next candidate. Every (set of linearized operations, model state) pair
//! is remembered, the set as a `u64` bitset, so that no configuration is
//! explored twice; that memo is what keeps the search close to linear on
//! well-behaved histories. The search is iterative, with an explicit stack,
//! so histories of many thousands of operations do not overflow the thread's
//! stack, and it stops with [`Verdict::Timeout`] when its time budget is
//! spent. Two reductions keep the search narrow without changing a verdict:
//! a read-only operation ([`Model::is_read_only`]) that fits is placed at once
//! with no alternative tried (placing a read as early as it fits never hurts),
//! and a model may fold facts the history pins down into the initial state
//! ([`Model::init_for`]): [`AppendLog`] accepts appends only in the order its
//! longest read shows.
//!
//! **Unknown outcomes.** An operation whose client never learnt the outcome
//! (a timeout, a lost connection) has `completion: None`. It may have taken
//! effect at any instant after its invoke, or never: it gets a call entry but
//! no return entry (its return time is +infinity), the model is asked about it
//! with output `None`, and the search succeeds as soon as every operation that
//! *did* return is linearized, whichever unknown ones it used. This is the
//! treatment of Knossos' and Porcupine's "info" operations. Candidates that
//! returned are tried before unknown ones, because most unknown operations are
//! only needed (if at all) where a later read reveals them.
//!
//! **Cost.** Proving a history linearizable usually takes one pass; refuting
//! it means exhausting every configuration reachable before the bad
//! operation, which stays cheap while those are pinned down by reads. An
//! unknown operation stays optional from its invoke to the end, so each one
//! still pending roughly doubles the configurations. Models therefore settle
//! what the rest of the history decides ([`Model::settle_unknowns`]): an
//! unknown append (or write) that no read observed is left out, and one whose
//! id (or value) a read returned, appended by no one else, gets that read's
//! return as its deadline. Give appends unique ids (writes unique values) and
//! every unknown operation is settled; otherwise a refutation with many
//! unknown operations can run into the budget.
//!
//! **Models.** [`AppendLog`] is an append-only list of ids with appends and
//! full reads, the shape of a replicated log seen by its clients; its state is
//! a shared persistent list, so that states are cheap to clone and remember.
//! [`Register`] is a single read/write register. [`check_partitioned`] checks
//! each key of a history separately, which is sound for models whose keys are
//! independent (linearizability is compositional) and much cheaper than one
//! large search.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash + fmt::Debug;
    type Input: Clone + fmt::Debug;
    type Output: Clone + fmt::Debug;

    fn init(&self) -> Self::State;

    /// Applies `input` to `state`; returns the next state if the operation could
    /// have returned `output` from `state`, or None if not.
    /// `output` is None for an operation whose outcome is unknown (timed out,
    /// connection lost): it may have taken effect or not, at any time after invoke.
    fn step(&self, state: &Self::State, input: &Self::Input, output: Option<&Self::Output>) -> Option<Self::State>;

    /// Settles unknown-outcome operations that the rest of the history already
    /// decides, as `(index into history, how)` pairs; operations not listed are
    /// searched as recorded. It must not change the verdict: only leave out an
    /// operation that no linearization needs, and only give a deadline to one
    /// that every linearization must place before it. Pairs naming an
    /// operation that returned are ignored. The default settles nothing.
    fn settle_unknowns(&self, _history: &[Operation<Self::Input, Self::Output>]) -> Vec<(usize, Settled)> {
        Vec::new()
    }

    /// Whether the operation never changes the state, in any state where it
    /// can take effect (a read). Such an operation is placed as soon as it
    /// fits, with no other order tried: moving it from later in a
    /// linearization to a point where it already fits changes no other
    /// operation's state. Answer `false` when unsure: a write of the value
    /// already held changes nothing *here*, but would elsewhere. The default
    /// is `false`.
    fn is_read_only(&self, _input: &Self::Input, _output: Option<&Self::Output>) -> bool {
        false
    }

    /// Says, for a person reading a failure, why `step` rejects the operation
    /// in `state` (e.g. which id a read is missing). The default says nothing.
    fn explain_rejection(
        &self,
        _state: &Self::State,
        _input: &Self::Input,
        _output: Option<&Self::Output>,
    ) -> Option<String> {
        None
    }

    /// The state to start checking `history` from; the default is
    /// [`Model::init`]. A model may fold into it facts that `history` pins
    /// down, for `step` to prune with: [`AppendLog`]'s carries the longest
    /// list any read returned, so appends are only tried in that order. `step`
    /// may only reject, because of such facts, steps that no linearization of
    /// `history` takes, so the verdict stays the same.
    fn init_for(&self, _history: &[Operation<Self::Input, Self::Output>]) -> Self::State {
        self.init()
    }
}

/// How [`Model::settle_unknowns`] settles one unknown-outcome operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// No linearization needs the operation: it is left out of the search.
    Omit,
    /// The operation certainly took effect, no later than this time: it is
    /// searched as if it had returned then (still with output `None`). A time
    /// before the operation's invoke is ignored.
    HappenedBefore(u64),
}

/// One client operation as recorded: invoke/return times in any monotonic unit (e.g. nanoseconds since the run started).
#[derive(Clone, Debug)]
pub struct Operation<I, O> {
    pub client: u64,
    pub input: I,
    pub invoke: u64,
    /// None: the outcome is unknown (the op may have happened at any point after invoke, or never).
    pub completion: Option<(u64, O)>,
}

impl<I, O> Operation<I, O> {
    /// An operation whose client saw it return `output` at time `ret`.
    pub fn completed(client: u64, input: I, invoke: u64, ret: u64, output: O) -> Self {
        Operation { client, input, invoke, completion: Some((ret, output)) }
    }

    /// An operation whose outcome the client never learnt.
    pub fn unknown(client: u64, input: I, invoke: u64) -> Self {
        Operation { client, input, invoke, completion: None }
    }
}

/// The result of a check. Its `Display` is meant to be printed by a failing
/// test and read by a person; it shortens very long renderings (keeping
/// both ends), which the fields hold whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists. The fields describe the dead end of the
    /// search that placed the most operations that had to be placed.
    NotLinearizable {
        /// The partition key (its `Debug`) when the failure came from [`check_partitioned`].
        key: Option<String>,
        /// Operations that had to be placed, placed by the longest linearizable prefix found.
        linearized: usize,
        /// Operations that had to be placed: those that returned, and unknown
        /// ones that the rest of the history shows took effect.
        completed: usize,
        /// The model state (its `Debug`) after that prefix.
        state: String,
        /// The last operations of that prefix, oldest first.
        prefix_tail: Vec<String>,
        /// Every operation that could have come next, each with why it did not.
        candidates: Vec<String>,
        /// The pending operation with the earliest return: it had to be placed
        /// before anything invoked after that return.
        blocking: String,
    },
    /// The time budget ran out first: the history is neither proven nor refuted.
    Timeout {
        explored: u64,
    },
    /// The history itself is malformed (an operation returned before it was invoked).
    InvalidHistory {
        reason: String,
    },
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// Longest rendering of one operation or state that `Display` prints whole.
const SHOW_CHARS: usize = 800;

/// Keeps the two ends of a long rendering (the oldest and newest ids of a log, say).
fn elide(text: &str) -> std::borrow::Cow<'_, str> {
    let count = text.chars().count();
    if count <= SHOW_CHARS {
        return text.into();
    }
    let keep = SHOW_CHARS / 2;
    let head: String = text.chars().take(keep).collect();
    let tail: String = text.chars().skip(count - keep).collect();
    format!("{head} ... ({} characters left out) ... {tail}", count - 2 * keep).into()
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::Timeout { explored } => write!(
                f,
                "linearizability check ran out of its time budget after exploring {explored} states; the history \
                 is neither proven linearizable nor refuted (check it per key with check_partitioned, shorten it, \
                 or raise the budget)"
            ),
            Verdict::InvalidHistory { reason } => write!(f, "invalid history: {reason}"),
            Verdict::NotLinearizable { key, linearized, completed, state, prefix_tail, candidates, blocking } => {
                write!(f, "not linearizable")?;
                if let Some(key) = key {
                    write!(f, " (key {key})")?;
                }
                writeln!(
                    f,
                    ": the longest linearizable prefix found places {linearized} of the {completed} operations that \
                     had to be placed"
                )?;
                writeln!(f, "  state after that prefix: {}", elide(state))?;
                if prefix_tail.is_empty() {
                    writeln!(f, "  (the prefix is empty: the search is stuck at the very start)")?;
                } else {
                    writeln!(f, "  last operations of that prefix, oldest first:")?;
                    for op in prefix_tail {
                        writeln!(f, "    {}", elide(op))?;
                    }
                }
                writeln!(f, "  no operation can be placed next; the candidates were:")?;
                for op in candidates {
                    writeln!(f, "    {}", elide(op))?;
                }
                write!(
                    f,
                    "  the pending operation with the earliest return, which had to be placed first: {}",
                    elide(blocking)
                )
            }
        }
    }
}

/// Checks `history` against `model`, searching for at most `budget`.
pub fn check<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>], budget: Duration) -> Verdict {
    check_until(model, history, Instant::now().checked_add(budget)).0
}

/// Checks each key's sub-history on its own (P-compositionality: a history
/// of independent objects is linearizable iff each object's is) and returns
/// the first failure, naming its key. `budget` covers all keys together.
pub fn check_partitioned<M: Model, K: Ord + fmt::Debug>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    key_of: impl Fn(&M::Input) -> K,
    budget: Duration,
) -> Verdict {
    let deadline = Instant::now().checked_add(budget);
    let mut parts: BTreeMap<K, Recorded<M>> = BTreeMap::new();
    for op in history {
        parts.entry(key_of(&op.input)).or_default().push(op.clone());
    }
    let mut explored_total = 0;
    for (part_key, ops) in parts {
        match check_until(model, &ops, deadline) {
            (Verdict::Linearizable, explored) => explored_total += explored,
            (Verdict::Timeout { explored }, _) => return Verdict::Timeout { explored: explored_total + explored },
            (Verdict::InvalidHistory { reason }, _) => {
                return Verdict::InvalidHistory { reason: format!("key {part_key:?}: {reason}") };
            }
            (mut failure, _) => {
                if let Verdict::NotLinearizable { key, .. } = &mut failure {
                    *key = Some(format!("{part_key:?}"));
                }
                return failure;
            }
        }
    }
    Verdict::Linearizable
}

/// [`check`] with an absolute deadline (None: no limit), also returning how
/// many states the search explored.
fn check_until<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    deadline: Option<Instant>,
) -> (Verdict, u64) {
    match prepare(model, history) {
        Ok(ops) => Search::new(model, ops).run(model.init_for(history), deadline),
        Err(reason) => (Verdict::InvalidHistory { reason }, 0),
    }
}

/// A recorded history of `M`'s operations.
type Recorded<M> = Vec<Operation<<M as Model>::Input, <M as Model>::Output>>;
/// A history as the search sees it.
type Prepared<M> = Vec<Op<<M as Model>::Input, <M as Model>::Output>>;

/// An operation as the search sees it.
struct Op<I, O> {
    client: u64,
    input: I,
    invoke: u64,
    /// None: unknown outcome.
    output: Option<O>,
    /// The recorded return time, or the deadline a model settled (output None).
    end: Option<u64>,
    /// [`Model::is_read_only`].
    read_only: bool,
}

impl<I: fmt::Debug, O: fmt::Debug> Op<I, O> {
    fn describe(&self) -> String {
        let Op { client, input, invoke, .. } = self;
        match (&self.output, self.end) {
            (Some(out), Some(ret)) => {
                format!("client {client}: {input:?} invoked at {invoke}, returned {out:?} at {ret}")
            }
            (None, Some(t)) => format!(
                "client {client}: {input:?} invoked at {invoke}, outcome unknown (the rest of the history shows it \
                 took effect before {t})"
            ),
            (_, None) => format!("client {client}: {input:?} invoked at {invoke}, outcome unknown"),
        }
    }
}

/// Validates the history, applies the model's settlements and sorts by invoke time.
fn prepare<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> Result<Prepared<M>, String> {
    for op in history {
        if let Some((ret, _)) = &op.completion {
            if *ret < op.invoke {
                return Err(format!(
                    "client {}: {:?} returned at {ret}, before it was invoked at {}",
                    op.client, op.input, op.invoke
                ));
            }
        }
    }
    let settled: HashMap<usize, Settled> = model.settle_unknowns(history).into_iter().collect();
    let mut ops = Vec::with_capacity(history.len());
    for (i, op) in history.iter().enumerate() {
        let (output, end) = match (&op.completion, settled.get(&i)) {
            (Some((ret, out)), _) => (Some(out.clone()), Some(*ret)),
            (None, Some(Settled::Omit)) => continue,
            (None, Some(Settled::HappenedBefore(t))) if *t >= op.invoke => (None, Some(*t)),
            (None, _) => (None, None),
        };
        let read_only = model.is_read_only(&op.input, output.as_ref());
        ops.push(Op { client: op.client, input: op.input.clone(), invoke: op.invoke, output, end, read_only });
    }
    // A stable sort keeps the recorded order among equal invoke times, so results are reproducible.
    ops.sort_by_key(|op| op.invoke);
    Ok(ops)
}

/// Sentinel of the list of call and return entries of operations that have an end.
const MAIN: usize = 0;
/// Sentinel of the list of call entries of unknown operations, sorted by invoke.
const UNKNOWN: usize = 1;

struct Entry {
    op: usize,
    time: u64,
    is_return: bool,
}

/// Two circular doubly linked lists over the entries. Removing entries and
/// putting them back in reverse order restores the lists exactly (dancing links).
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Links {
    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[n] = e;
    }
}

/// Where the search looks for the next candidate.
#[derive(Clone, Copy)]
enum Cursor {
    /// A node just reached: first look for a read-only operation that fits.
    Fresh,
    /// A read-only operation was placed here, so there is no alternative to try.
    Exhausted,
    /// At an entry of the main list (or its sentinel).
    Main(usize),
    /// At an entry of the unknown list; only entries invoked at or before `limit`
    /// (the earliest pending return) are candidates.
    Unknown { entry: usize, limit: u64 },
}

impl Cursor {
    fn advance(self, links: &Links) -> Cursor {
        match self {
            Cursor::Main(e) => Cursor::Main(links.next[e]),
            Cursor::Unknown { entry, limit } => Cursor::Unknown { entry: links.next[entry], limit },
            Cursor::Fresh | Cursor::Exhausted => Cursor::Exhausted,
        }
    }
}

/// One linearized operation on the search stack.
struct Frame<S> {
    op: usize,
    /// The cursor that found the operation; the search resumes after it.
    at: Cursor,
    /// The state before the operation.
    state: S,
}

/// A set of linearized operations as the memo stores it: the bitset without
/// its leading all-ones and trailing all-zeros words. Configurations mostly
/// differ in a window of recent operations, so keys stay a word or two long
/// however long the history; the encoding is exact (the bitset's length is
/// fixed for a search).
#[derive(PartialEq, Eq, Hash)]
struct Placed {
    skipped: usize,
    words: Box<[u64]>,
}

impl Placed {
    fn of(bits: &[u64]) -> Placed {
        let skipped = bits.iter().position(|w| *w != u64::MAX).unwrap_or(bits.len());
        let end = bits.iter().rposition(|w| *w != 0).map_or(skipped, |last| (last + 1).max(skipped));
        Placed { skipped, words: bits[skipped..end].into() }
    }
}

/// The deepest dead end met so far.
struct DeadEnd<S> {
    linearized: usize,
    state: S,
    prefix_tail: Vec<usize>,
    candidates: Vec<usize>,
    blocking: usize,
}

/// How many operations of the longest prefix the explanation shows.
const PREFIX_TAIL: usize = 10;
/// How often (in loop turns) the search looks at the clock.
const CLOCK_EVERY: u64 = 1024;

struct Search<'m, M: Model> {
    model: &'m M,
    ops: Prepared<M>,
    entries: Vec<Entry>,
    call_of: Vec<usize>,
    return_of: Vec<Option<usize>>,
}

impl<'m, M: Model> Search<'m, M> {
    fn new(model: &'m M, ops: Prepared<M>) -> Self {
        let mut main = Vec::new();
        let mut unknown = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let call = Entry { op: i, time: op.invoke, is_return: false };
            match op.end {
                Some(end) => {
                    main.push(call);
                    main.push(Entry { op: i, time: end, is_return: true });
                }
                None => unknown.push(call),
            }
        }
        // Calls sort before returns at equal times: an operation that returns at
        // the instant another is invoked is concurrent with it, not before it.
        main.sort_by_key(|e| (e.time, e.is_return, e.op));
        unknown.sort_by_key(|e| (e.time, e.op));
        let sentinel = || Entry { op: usize::MAX, time: 0, is_return: false };
        let mut entries = vec![sentinel(), sentinel()];
        entries.extend(main);
        entries.extend(unknown);
        let mut call_of = vec![0; ops.len()];
        let mut return_of = vec![None; ops.len()];
        for (e, entry) in entries.iter().enumerate().skip(2) {
            if entry.is_return {
                return_of[entry.op] = Some(e);
            } else {
                call_of[entry.op] = e;
            }
        }
        Search { model, ops, entries, call_of, return_of }
    }

    /// Builds the two circular lists: main entries then unknown entries, in `entries` order.
    fn links(&self) -> Links {
        let n = self.entries.len();
        let mut next = vec![0; n];
        let mut prev = vec![0; n];
        let first_unknown = 2 + self.ops.iter().filter(|op| op.end.is_some()).count() * 2;
        for (sentinel, range) in [(MAIN, 2..first_unknown), (UNKNOWN, first_unknown..n)] {
            let mut last = sentinel;
            for e in range {
                next[last] = e;
                prev[e] = last;
                last = e;
            }
            next[last] = sentinel;
            prev[sentinel] = last;
        }
        Links { next, prev }
    }

    fn lift(&self, links: &mut Links, op: usize) {
        links.unlink(self.call_of[op]);
        if let Some(r) = self.return_of[op] {
            links.unlink(r);
        }
    }

    fn unlift(&self, links: &mut Links, op: usize) {
        if let Some(r) = self.return_of[op] {
            links.relink(r);
        }
        links.relink(self.call_of[op]);
    }

    /// The first pending return entry, or MAIN when none is pending.
    fn first_return(&self, links: &Links) -> usize {
        let mut e = links.next[MAIN];
        while e != MAIN && !self.entries[e].is_return {
            e = links.next[e];
        }
        e
    }

    /// The call entries of the operations that could come next: those that
    /// returned first, then the unknown ones, each in invoke order.
    fn candidate_entries<'a>(&'a self, links: &'a Links) -> impl Iterator<Item = usize> + 'a {
        let first_return = self.first_return(links);
        let limit = if first_return == MAIN { u64::MAX } else { self.entries[first_return].time };
        let walk = |sentinel: usize| std::iter::successors(Some(links.next[sentinel]), |&e| Some(links.next[e]));
        walk(MAIN)
            .take_while(move |&e| e != first_return)
            .chain(walk(UNKNOWN).take_while(move |&e| e != UNKNOWN && self.entries[e].time <= limit))
    }

    /// A read-only candidate that fits `state`, with the state after it.
    fn fitting_read_only(&self, links: &Links, state: &M::State) -> Option<(usize, M::State)> {
        self.candidate_entries(links).find_map(|e| {
            let op = &self.ops[self.entries[e].op];
            let next = op.read_only.then(|| self.model.step(state, &op.input, op.output.as_ref()))??;
            Some((e, next))
        })
    }

    fn run(&self, init: M::State, deadline: Option<Instant>) -> (Verdict, u64) {
        let mut links = self.links();
        let mut bits = vec![0u64; self.ops.len().div_ceil(64)];
        let mut seen: HashSet<(Placed, M::State)> = HashSet::new();
        let mut state = init;
        let mut frames: Vec<Frame<M::State>> = Vec::new();
        // Operations with an end that are currently linearized.
        let mut placed = 0;
        let mut deepest: Option<DeadEnd<M::State>> = None;
        let mut explored = 0u64;
        let mut turns = 0u64;
        let mut cursor = Cursor::Fresh;
        loop {
            if links.next[MAIN] == MAIN {
                return (Verdict::Linearizable, explored);
            }
            if turns.is_multiple_of(CLOCK_EVERY) && deadline.is_some_and(|d| Instant::now() >= d) {
                return (Verdict::Timeout { explored }, explored);
            }
            turns += 1;
            // The candidate to try, where to resume after it, and the state after it if it fits.
            let pick = match cursor {
                Cursor::Fresh => match self.fitting_read_only(&links, &state) {
                    Some((e, next)) => Some((e, Cursor::Exhausted, Some(next))),
                    None => {
                        cursor = Cursor::Main(links.next[MAIN]);
                        continue;
                    }
                },
                Cursor::Main(e) if e != MAIN && !self.entries[e].is_return => Some((e, cursor, None)),
                Cursor::Main(e) => {
                    // The first pending return: operations that returned are exhausted here,
                    // so go on with the unknown ones invoked before it.
                    let limit = if e == MAIN { u64::MAX } else { self.entries[e].time };
                    cursor = Cursor::Unknown { entry: links.next[UNKNOWN], limit };
                    continue;
                }
                Cursor::Unknown { entry, limit } if entry != UNKNOWN && self.entries[entry].time <= limit => {
                    Some((entry, cursor, None))
                }
                Cursor::Unknown { .. } | Cursor::Exhausted => None,
            };
            if let Some((e, resume, next)) = pick {
                let i = self.entries[e].op;
                let op = &self.ops[i];
                let next = match next {
                    Some(next) => Some(next),
                    // Read-only operations were tried when this node was fresh; they did not fit.
                    None if op.read_only => None,
                    None => self.model.step(&state, &op.input, op.output.as_ref()),
                };
                if let Some(next) = next {
                    bits[i / 64] |= 1 << (i % 64);
                    if seen.insert((Placed::of(&bits), next.clone())) {
                        frames.push(Frame { op: i, at: resume, state: std::mem::replace(&mut state, next) });
                        self.lift(&mut links, i);
                        placed += usize::from(op.end.is_some());
                        explored += 1;
                        cursor = Cursor::Fresh;
                        continue;
                    }
                    bits[i / 64] &= !(1 << (i % 64));
                }
                cursor = resume.advance(&links);
                continue;
            }
            // Dead end: nothing can be placed next from here.
            if deepest.as_ref().is_none_or(|d| placed > d.linearized) {
                let candidates = self.candidate_entries(&links).map(|e| self.entries[e].op).collect();
                let first_return = self.first_return(&links);
                // Only reached while an operation with an end is pending, so its return entry is in the list.
                assert!(first_return != MAIN, "a pending operation has a return entry");
                let blocking = self.entries[first_return].op;
                let start = frames.len().saturating_sub(PREFIX_TAIL);
                let prefix_tail = frames[start..].iter().map(|f| f.op).collect();
                deepest = Some(DeadEnd { linearized: placed, state: state.clone(), prefix_tail, candidates, blocking });
            }
            let Some(frame) = frames.pop() else {
                let dead = deepest.expect("a dead end was just recorded");
                return (self.explain(dead), explored);
            };
            self.unlift(&mut links, frame.op);
            bits[frame.op / 64] &= !(1 << (frame.op % 64));
            placed -= usize::from(self.ops[frame.op].end.is_some());
            state = frame.state;
            cursor = frame.at.advance(&links);
        }
    }

    fn explain(&self, dead: DeadEnd<M::State>) -> Verdict {
        let candidates = dead
            .candidates
            .iter()
            .map(|&i| {
                let op = &self.ops[i];
                let why = if self.model.step(&dead.state, &op.input, op.output.as_ref()).is_some() {
                    "it fits, but no way of going on from there works".to_string()
                } else {
                    match self.model.explain_rejection(&dead.state, &op.input, op.output.as_ref()) {
                        Some(reason) => format!("it does not fit this state: {reason}"),
                        None => "it does not fit this state".to_string(),
                    }
                };
                format!("{} -- {why}", op.describe())
            })
            .collect();
        Verdict::NotLinearizable {
            key: None,
            linearized: dead.linearized,
            completed: self.ops.iter().filter(|op| op.end.is_some()).count(),
            state: format!("{:?}", dead.state),
            prefix_tail: dead.prefix_tail.iter().map(|&i| self.ops[i].describe()).collect(),
            candidates,
            blocking: self.ops[dead.blocking].describe(),
        }
    }
}

/// An append-only list of u64 ids, read whole: the shape of a replicated log
/// as its clients see it.
#[derive(Clone, Copy, Debug, Default)]
pub struct AppendLog;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LogInput {
    Append(u64),
    Read,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LogOutput {
    /// The append was acknowledged.
    Appended,
    /// The full list as read, oldest first.
    Read(Vec<u64>),
}

impl Model for AppendLog {
    type State = LogState;
    type Input = LogInput;
    type Output = LogOutput;

    fn init(&self) -> LogState {
        LogState::default()
    }

    fn step(&self, state: &LogState, input: &LogInput, output: Option<&LogOutput>) -> Option<LogState> {
        match (input, output) {
            (LogInput::Append(id), None | Some(LogOutput::Appended)) => {
                state.expected_next().is_none_or(|e| e == *id).then(|| state.pushed(*id))
            }
            (LogInput::Read, Some(LogOutput::Read(ids))) => state.matches(ids).then(|| state.clone()),
            // A read that never returned observed nothing.
            (LogInput::Read, None) => Some(state.clone()),
            (LogInput::Append(_), Some(LogOutput::Read(_))) | (LogInput::Read, Some(LogOutput::Appended)) => None,
        }
    }

    fn is_read_only(&self, input: &LogInput, _output: Option<&LogOutput>) -> bool {
        *input == LogInput::Read
    }

    fn explain_rejection(&self, state: &LogState, input: &LogInput, output: Option<&LogOutput>) -> Option<String> {
        match (input, output) {
            (LogInput::Append(id), None | Some(LogOutput::Appended)) => {
                let (p, e) = (state.len(), state.expected_next()?);
                Some(format!("the longest read has id {e} at position {p}, so id {id} cannot be appended there"))
            }
            (LogInput::Read, Some(LogOutput::Read(ids))) => Some(explain_read(&state.to_vec(), ids)),
            _ => Some(format!("{input:?} cannot return {output:?}")),
        }
    }

    /// Every linearization places the longest read and the log only grows,
    /// so the append at a position that read covers must be of the id it
    /// shows there: appends need not be tried in other orders.
    fn init_for(&self, history: &[Operation<LogInput, LogOutput>]) -> LogState {
        let longest = history
            .iter()
            .filter_map(|op| match &op.completion {
                Some((_, LogOutput::Read(ids))) if op.input == LogInput::Read => Some(ids),
                _ => None,
            })
            .max_by_key(|ids| ids.len());
        LogState { last: None, observed: longest.map(|ids| ids.as_slice().into()) }
    }

    /// Unknown reads change nothing, so they are left out. An unknown append
    /// whose id no read returned is left out too: once in the state its id
    /// would be in every later read, so nothing read can come after it and
    /// dropping it changes no output. An unknown append whose id some read
    /// returned, and which is the only append of that id, certainly happened,
    /// before the earliest return of such a read.
    fn settle_unknowns(&self, history: &[Operation<LogInput, LogOutput>]) -> Vec<(usize, Settled)> {
        let mut appends_of: HashMap<u64, usize> = HashMap::new();
        let mut first_read: HashMap<u64, u64> = HashMap::new();
        for op in history {
            match (&op.input, &op.completion) {
                (LogInput::Append(id), _) => *appends_of.entry(*id).or_default() += 1,
                (LogInput::Read, Some((ret, LogOutput::Read(ids)))) => {
                    for id in ids {
                        first_read.entry(*id).and_modify(|t| *t = (*t).min(*ret)).or_insert(*ret);
                    }
                }
                (LogInput::Read, _) => {}
            }
        }
        let mut settled = Vec::new();
        for (i, op) in history.iter().enumerate().filter(|(_, op)| op.completion.is_none()) {
            match op.input {
                LogInput::Read => settled.push((i, Settled::Omit)),
                LogInput::Append(id) => match first_read.get(&id) {
                    None => settled.push((i, Settled::Omit)),
                    Some(&t) if appends_of.get(&id) == Some(&1) => settled.push((i, Settled::HappenedBefore(t))),
                    Some(_) => {}
                },
            }
        }
        settled
    }
}

/// Describes how a read's list differs from the log (positions from 0).
fn explain_read(log: &[u64], read: &[u64]) -> String {
    const SHOW: usize = 10;
    let common = log.iter().zip(read).take_while(|(a, b)| a == b).count();
    if common == read.len() {
        let missing = &log[common..];
        let more = if missing.len() > SHOW { " ..." } else { "" };
        return format!(
            "the read returned {} ids but the log already holds {}; it misses {:?}{more}",
            read.len(),
            log.len(),
            &missing[..missing.len().min(SHOW)]
        );
    }
    if common == log.len() {
        let extra = &read[common..];
        let more = if extra.len() > SHOW { " ..." } else { "" };
        return format!(
            "the read returned {} ids, more than the {} the log holds here; it also has {:?}{more}",
            read.len(),
            log.len(),
            &extra[..extra.len().min(SHOW)]
        );
    }
    let (r, l) = (read[common], log[common]);
    let lost = if read.contains(&l) { String::new() } else { format!(" (id {l} is missing from the read)") };
    format!(
        "the read ({} ids) has id {r} at position {common} where the log ({} ids) has id {l}{lost}",
        read.len(),
        log.len()
    )
}

/// The state of an [`AppendLog`]: a persistent list shared between states,
/// so that cloning and appending are O(1) and the search memo stays small.
/// Equality is exact (it compares ids), with the length and a rolling hash
/// of the ids as a fast path.
#[derive(Clone, Default)]
pub struct LogState {
    last: Option<Rc<LogNode>>,
    /// The longest list a read returned ([`Model::init_for`]). Every state of
    /// one search shares it, so it is no part of equality or hashing.
    observed: Option<Rc<[u64]>>,
}

/// The newest id of a log, with the list before it.
struct LogNode {
    id: u64,
    len: usize,
    digest: u64,
    prev: Option<Rc<LogNode>>,
}

impl Drop for LogNode {
    // Dropping a long list node by node from here keeps the drop from recursing once per id.
    fn drop(&mut self) {
        let mut next = self.prev.take();
        while let Some(node) = next {
            match Rc::try_unwrap(node) {
                Ok(mut node) => next = node.prev.take(),
                Err(_) => break,
            }
        }
    }
}

impl LogState {
    pub fn len(&self) -> usize {
        self.last.as_ref().map_or(0, |n| n.len)
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    /// The ids, oldest first.
    pub fn to_vec(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.newest_first().collect();
        ids.reverse();
        ids
    }

    fn digest(&self) -> u64 {
        self.last.as_ref().map_or(0, |n| n.digest)
    }

    fn newest_first(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::successors(self.last.as_deref(), |n| n.prev.as_deref()).map(|n| n.id)
    }

    /// The id the longest read shows at the next position, if it covers it.
    fn expected_next(&self) -> Option<u64> {
        self.observed.as_deref()?.get(self.len()).copied()
    }

    fn pushed(&self, id: u64) -> LogState {
        let digest = (self.digest().rotate_left(29) ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let node = LogNode { id, len: self.len() + 1, digest, prev: self.last.clone() };
        LogState { last: Some(Rc::new(node)), observed: self.observed.clone() }
    }

    /// Whether the log holds exactly `ids`; compares from the newest id, where
    /// a wrong guess usually differs.
    fn matches(&self, ids: &[u64]) -> bool {
        ids.len() == self.len() && self.newest_first().zip(ids.iter().rev()).all(|(a, b)| a == *b)
    }
}

impl PartialEq for LogState {
    fn eq(&self, other: &Self) -> bool {
        if self.len() != other.len() || self.digest() != other.digest() {
            return false;
        }
        let (mut a, mut b) = (self.last.as_ref(), other.last.as_ref());
        while let (Some(x), Some(y)) = (a, b) {
            if Rc::ptr_eq(x, y) {
                return true;
            }
            if x.id != y.id {
                return false;
            }
            (a, b) = (x.prev.as_ref(), y.prev.as_ref());
        }
        // Equal lengths: both ran out together.
        true
    }
}

impl Eq for LogState {}

impl Hash for LogState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.len().hash(state);
        self.digest().hash(state);
    }
}

impl fmt::Debug for LogState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.to_vec()).finish()
    }
}

/// A single read/write register holding `Option<u64>`, initially `None`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Register;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterInput {
    Write(u64),
    Read,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOutput {
    Written,
    Read(Option<u64>),
}

impl Model for Register {
    type State = Option<u64>;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Option<u64> {
        None
    }

    fn step(&self, state: &Option<u64>, input: &RegisterInput, output: Option<&RegisterOutput>) -> Option<Option<u64>> {
        match (input, output) {
            (RegisterInput::Write(v), None | Some(RegisterOutput::Written)) => Some(Some(*v)),
            (RegisterInput::Read, Some(RegisterOutput::Read(v))) => (v == state).then_some(*state),
            (RegisterInput::Read, None) => Some(*state),
            (RegisterInput::Write(_), Some(RegisterOutput::Read(_)))
            | (RegisterInput::Read, Some(RegisterOutput::Written)) => None,
        }
    }

    fn is_read_only(&self, input: &RegisterInput, _output: Option<&RegisterOutput>) -> bool {
        *input == RegisterInput::Read
    }

    /// As for [`AppendLog`]: unknown reads are left out, and so is an unknown
    /// write of a value no read returned (only writes can follow it before
    /// the value changes, so dropping it changes no output). An unknown write
    /// that is the only write of a value some read returned certainly
    /// happened, before the earliest return of such a read.
    fn settle_unknowns(&self, history: &[Operation<RegisterInput, RegisterOutput>]) -> Vec<(usize, Settled)> {
        let mut writes_of: HashMap<u64, usize> = HashMap::new();
        let mut first_read: HashMap<u64, u64> = HashMap::new();
        for op in history {
            match (&op.input, &op.completion) {
                (RegisterInput::Write(v), _) => *writes_of.entry(*v).or_default() += 1,
                (RegisterInput::Read, Some((ret, RegisterOutput::Read(Some(v))))) => {
                    first_read.entry(*v).and_modify(|t| *t = (*t).min(*ret)).or_insert(*ret);
                }
                (RegisterInput::Read, _) => {}
            }
        }
        let mut settled = Vec::new();
        for (i, op) in history.iter().enumerate().filter(|(_, op)| op.completion.is_none()) {
            match op.input {
                RegisterInput::Read => settled.push((i, Settled::Omit)),
                RegisterInput::Write(v) => match first_read.get(&v) {
                    None => settled.push((i, Settled::Omit)),
                    Some(&t) if writes_of.get(&v) == Some(&1) => settled.push((i, Settled::HappenedBefore(t))),
                    Some(_) => {}
                },
            }
        }
        settled
    }

    fn explain_rejection(
        &self,
        state: &Option<u64>,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<String> {
        match output {
            Some(RegisterOutput::Read(v)) if *input == RegisterInput::Read => {
                Some(format!("the register holds {state:?}, the read returned {v:?}"))
            }
            _ => Some(format!("{input:?} cannot return {output:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_secs(10);

    type LogOp = Operation<LogInput, LogOutput>;
    type RegOp = Operation<RegisterInput, RegisterOutput>;

    fn append(client: u64, invoke: u64, ret: u64, id: u64) -> LogOp {
        Operation::completed(client, LogInput::Append(id), invoke, ret, LogOutput::Appended)
    }

    fn append_unknown(client: u64, invoke: u64, id: u64) -> LogOp {
        Operation::unknown(client, LogInput::Append(id), invoke)
    }

    fn read(client: u64, invoke: u64, ret: u64, ids: &[u64]) -> LogOp {
        Operation::completed(client, LogInput::Read, invoke, ret, LogOutput::Read(ids.to_vec()))
    }

    fn write(client: u64, invoke: u64, ret: u64, v: u64) -> RegOp {
        Operation::completed(client, RegisterInput::Write(v), invoke, ret, RegisterOutput::Written)
    }

    fn get(client: u64, invoke: u64, ret: u64, v: Option<u64>) -> RegOp {
        Operation::completed(client, RegisterInput::Read, invoke, ret, RegisterOutput::Read(v))
    }

    fn log(history: &[LogOp]) -> Verdict {
        check(&AppendLog, history, BUDGET)
    }

    fn reg(history: &[RegOp]) -> Verdict {
        check(&Register, history, BUDGET)
    }

    fn assert_not_linearizable(v: &Verdict) {
        assert!(matches!(v, Verdict::NotLinearizable { .. }), "expected not linearizable, got: {v}");
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [append(1, 0, 10, 1), read(1, 11, 20, &[1]), append(2, 21, 30, 2), read(2, 31, 40, &[1, 2])];
        assert_eq!(log(&h), Verdict::Linearizable);
        assert_eq!(log(&[]), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_appends_may_be_observed_in_either_order() {
        for order in [[1, 2], [2, 1]] {
            // Both appends overlap each other and the reads; every read agrees on one order.
            let h = [
                append(1, 0, 100, 1),
                append(2, 10, 90, 2),
                read(3, 20, 110, &order),
                read(4, 50, 120, &order[..1]),
                read(5, 130, 140, &order),
            ];
            assert_eq!(log(&h), Verdict::Linearizable, "order {order:?}");
        }
    }

    #[test]
    fn stale_read_is_not_linearizable_and_the_explanation_names_it() {
        let h = [append(1, 0, 10, 1), append(2, 20, 30, 2), read(3, 40, 50, &[1])];
        let v = log(&h);
        assert_not_linearizable(&v);
        let text = v.to_string();
        assert!(text.contains("client 3: Read invoked at 40, returned Read([1]) at 50"), "{text}");
        assert!(text.contains("does not fit this state"), "{text}");
        assert!(text.contains("state after that prefix: [1, 2]"), "{text}");
        let Verdict::NotLinearizable { linearized, completed, .. } = v else { unreachable!() };
        assert_eq!((linearized, completed), (2, 3));
    }

    #[test]
    fn reads_in_contradictory_orders_are_not_linearizable() {
        let h = [append(1, 0, 100, 1), append(2, 0, 100, 2), read(3, 10, 120, &[1, 2]), read(4, 130, 140, &[2, 1])];
        assert_not_linearizable(&log(&h));
        // Even when the reads overlap each other, a log cannot show both orders.
        let h = [append(1, 0, 100, 1), append(2, 0, 100, 2), read(3, 10, 120, &[1, 2]), read(4, 10, 120, &[2, 1])];
        assert_not_linearizable(&log(&h));
    }

    #[test]
    fn unknown_append_observed_later_is_linearizable() {
        let h = [append_unknown(1, 0, 1), append(2, 50, 60, 2), read(3, 70, 80, &[1, 2])];
        assert_eq!(log(&h), Verdict::Linearizable);
        // It may also take effect after appends invoked long after it.
        let h = [append_unknown(1, 0, 1), append(2, 50, 60, 2), read(3, 70, 80, &[2, 1])];
        assert_eq!(log(&h), Verdict::Linearizable);
    }

    #[test]
    fn unknown_append_never_observed_is_linearizable() {
        let h = [append_unknown(1, 0, 1), append(2, 50, 60, 2), read(3, 70, 80, &[2]), read(3, 90, 95, &[2])];
        assert_eq!(log(&h), Verdict::Linearizable);
    }

    #[test]
    fn unknown_append_observed_then_missing_is_not_linearizable() {
        let h = [append_unknown(1, 0, 1), read(3, 70, 80, &[1]), read(3, 90, 95, &[])];
        assert_not_linearizable(&log(&h));
    }

    #[test]
    fn unknown_append_cannot_be_observed_before_its_invoke() {
        let h = [read(3, 10, 20, &[1]), append_unknown(1, 30, 1)];
        assert_not_linearizable(&log(&h));
    }

    #[test]
    fn read_of_an_id_never_appended_is_not_linearizable() {
        let h = [append(1, 0, 10, 1), append_unknown(2, 0, 2), read(3, 20, 30, &[1, 3])];
        let v = log(&h);
        assert_not_linearizable(&v);
        assert!(v.to_string().contains("Read([1, 3])"), "{v}");
    }

    #[test]
    fn real_time_order_is_respected() {
        let h = [append(1, 0, 10, 1), append(2, 20, 30, 2), read(3, 40, 50, &[2, 1])];
        assert_not_linearizable(&log(&h));
        // Touching intervals are concurrent, so either order is allowed.
        let h = [append(1, 0, 10, 1), append(2, 10, 30, 2), read(3, 40, 50, &[2, 1])];
        assert_eq!(log(&h), Verdict::Linearizable);
    }

    #[test]
    fn history_order_does_not_matter() {
        let mut h = vec![append(1, 0, 10, 1), read(3, 40, 50, &[1, 2]), append(2, 20, 30, 2), read(4, 5, 15, &[])];
        assert_eq!(log(&h), Verdict::Linearizable);
        h.reverse();
        assert_eq!(log(&h), Verdict::Linearizable);
        h[0] = read(3, 40, 50, &[2, 1]);
        assert_not_linearizable(&log(&h));
    }

    #[test]
    fn register_examples_from_porcupine() {
        // Porcupine README: write 100 [0,100] || read 100 [25,75] || read 0 [30,60]: linearizable.
        let h = [write(0, 0, 100, 100), get(1, 25, 75, Some(100)), get(2, 30, 60, None)];
        assert_eq!(reg(&h), Verdict::Linearizable);
        // write 200 [0,100] || read 200 [10,30] then read 0 [40,90]: the second read is stale.
        let h = [write(0, 0, 100, 200), get(1, 10, 30, Some(200)), get(2, 40, 90, None)];
        assert_not_linearizable(&reg(&h));
    }

    #[test]
    fn register_concurrent_writes_and_unknown_writes() {
        let h = [write(0, 0, 10, 1), write(1, 0, 10, 2), get(2, 20, 30, Some(1)), get(3, 20, 30, Some(1))];
        assert_eq!(reg(&h), Verdict::Linearizable);
        let h = [write(0, 0, 10, 1), write(1, 0, 10, 2), get(2, 20, 30, Some(1)), get(3, 40, 50, Some(2))];
        assert_not_linearizable(&reg(&h));
        // An unknown write can land after later reads, or never.
        let unknown = Operation::unknown(1, RegisterInput::Write(2), 5);
        let h = [write(0, 0, 10, 1), unknown.clone(), get(2, 20, 30, Some(1)), get(3, 40, 50, Some(2))];
        assert_eq!(reg(&h), Verdict::Linearizable);
        let h = [write(0, 0, 10, 1), unknown.clone(), get(2, 20, 30, Some(1)), get(3, 40, 50, Some(1))];
        assert_eq!(reg(&h), Verdict::Linearizable);
        // But once seen, it cannot be undone.
        let h = [write(0, 0, 10, 1), unknown, get(2, 20, 30, Some(2)), get(3, 40, 50, Some(1))];
        assert_not_linearizable(&reg(&h));
    }

    /// Registers keyed by a small name, each key independent.
    struct Keyed;

    impl Model for Keyed {
        type State = Option<u64>;
        type Input = (u8, RegisterInput);
        type Output = RegisterOutput;

        fn init(&self) -> Option<u64> {
            None
        }

        fn step(
            &self,
            state: &Option<u64>,
            input: &Self::Input,
            output: Option<&RegisterOutput>,
        ) -> Option<Option<u64>> {
            Register.step(state, &input.1, output)
        }
    }

    fn keyed(key: u8, op: RegOp) -> Operation<(u8, RegisterInput), RegisterOutput> {
        Operation { client: op.client, input: (key, op.input), invoke: op.invoke, completion: op.completion }
    }

    #[test]
    fn partitioned_check_splits_keys_and_names_the_failing_one() {
        // Key 'a' reads its own write after key 'b' was written: fine per key, not as one register.
        let h =
            [keyed(b'a', write(0, 0, 10, 1)), keyed(b'b', write(1, 20, 30, 2)), keyed(b'a', get(2, 40, 50, Some(1)))];
        assert_not_linearizable(&check(&Keyed, &h, BUDGET));
        assert_eq!(check_partitioned(&Keyed, &h, |i| i.0, BUDGET), Verdict::Linearizable);
        let h = [
            keyed(b'a', write(0, 0, 10, 1)),
            keyed(b'b', write(1, 20, 30, 2)),
            keyed(b'a', get(2, 40, 50, Some(1))),
            keyed(b'b', get(2, 60, 70, None)),
        ];
        // Here key 'b' reads its initial value after its write returned: as one register that fails too.
        assert_not_linearizable(&check(&Keyed, &h, BUDGET));
        let v = check_partitioned(&Keyed, &h, |i| char::from(i.0), BUDGET);
        let Verdict::NotLinearizable { key, .. } = &v else { panic!("expected not linearizable, got: {v}") };
        assert_eq!(key.as_deref(), Some("'b'"));
        assert!(v.to_string().contains("(key 'b')"), "{v}");
    }

    #[test]
    fn zero_budget_times_out() {
        let h = [append(1, 0, 10, 1), read(2, 20, 30, &[1])];
        let v = check(&AppendLog, &h, Duration::ZERO);
        assert_eq!(v, Verdict::Timeout { explored: 0 });
        assert!(v.to_string().contains("time budget"), "{v}");
    }

    #[test]
    fn return_before_invoke_is_an_invalid_history() {
        let v = log(&[append(1, 10, 5, 1)]);
        assert!(matches!(v, Verdict::InvalidHistory { .. }), "{v}");
        assert!(v.to_string().contains("returned at 5, before it was invoked at 10"), "{v}");
    }

    #[test]
    fn long_history_needs_no_deep_stack() {
        // 20,000 sequential appends and a final read, checked and dropped on a thread with a tiny stack.
        let worker = std::thread::Builder::new().stack_size(128 * 1024).spawn(|| {
            let n = 20_000;
            let mut h: Vec<LogOp> = (0..n).map(|i| append(i % 4, 2 * i, 2 * i + 1, i)).collect();
            h.push(read(9, 2 * n, 2 * n + 1, &(0..n).collect::<Vec<_>>()));
            check(&AppendLog, &h, BUDGET)
        });
        let v = worker.expect("spawn").join().expect("the check does not overflow the stack");
        assert_eq!(v, Verdict::Linearizable);
    }

    #[test]
    fn log_state_equality_is_exact() {
        let a = LogState::default().pushed(1).pushed(2);
        let b = LogState::default().pushed(1).pushed(2);
        let c = LogState::default().pushed(2).pushed(1);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, a.pushed(3));
        assert_eq!(a.to_vec(), vec![1, 2]);
        assert!(a.matches(&[1, 2]) && !a.matches(&[2, 1]) && !a.matches(&[1]));
        assert_eq!(format!("{c:?}"), "[2, 1]");
    }

    /// xorshift64: deterministic, no crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// Runs `ops` operations of `clients` clients against a real append-only
    /// list: each operation takes effect at a random instant of its interval.
    /// `unknown_percent` of the appends are recorded with an unknown outcome,
    /// half of those never taking effect. `ids` bounds the ids (reused ids when small).
    fn simulate_log(rng: &mut Rng, clients: u64, ops: usize, unknown_percent: u64, ids: u64) -> Vec<LogOp> {
        struct Planned {
            client: u64,
            append: Option<u64>,
            invoke: u64,
            ret: u64,
            effect: u64,
            unknown: bool,
            happens: bool,
        }
        let mut clock = vec![0; clients as usize];
        let mut planned = Vec::with_capacity(ops);
        for n in 0..ops as u64 {
            let client = rng.below(clients);
            let invoke = clock[client as usize] + rng.below(20);
            let ret = invoke + rng.below(100);
            let effect = invoke + rng.below(ret - invoke + 1);
            clock[client as usize] = ret;
            let append = (!rng.chance(40)).then_some(n % ids + 1);
            let unknown = append.is_some() && rng.chance(unknown_percent);
            let happens = !unknown || rng.chance(50);
            planned.push(Planned { client, append, invoke, ret, effect, unknown, happens });
        }
        let mut order: Vec<usize> = (0..planned.len()).collect();
        order.sort_by_key(|&i| (planned[i].effect, i));
        let mut list = Vec::new();
        let mut reads = vec![Vec::new(); planned.len()];
        for i in order {
            match planned[i].append {
                Some(id) if planned[i].happens => list.push(id),
                Some(_) => {}
                None => reads[i].clone_from(&list),
            }
        }
        planned
            .into_iter()
            .zip(reads)
            .map(|(p, seen)| match p.append {
                Some(id) if p.unknown => append_unknown(p.client, p.invoke, id),
                Some(id) => append(p.client, p.invoke, p.ret, id),
                None => read(p.client, p.invoke, p.ret, &seen),
            })
            .collect()
    }

    #[test]
    fn randomized_history_of_2000_ops() {
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        let mut h = simulate_log(&mut rng, 8, 2000, 5, u64::MAX);
        let started = Instant::now();
        let v = check(&AppendLog, &h, BUDGET);
        let took = started.elapsed();
        eprintln!("2000-op randomized history: {v} in {took:?}");
        assert_eq!(v, Verdict::Linearizable, "{v}");

        // Corrupt one read in the middle into a stale read: drop an id whose
        // append was acknowledged before the read was invoked.
        let (r, victim) = (1000..h.len())
            .find_map(|r| {
                let LogOutput::Read(ids) = &h[r].completion.as_ref()?.1 else { return None };
                let victim = h.iter().find_map(|a| match (&a.input, &a.completion) {
                    (LogInput::Append(id), Some((ret, _))) if *ret < h[r].invoke && ids.contains(id) => Some(*id),
                    _ => None,
                })?;
                Some((r, victim))
            })
            .expect("a read after an acknowledged append");
        if let Some((_, LogOutput::Read(ids))) = &mut h[r].completion {
            ids.retain(|id| *id != victim);
        }
        let started = Instant::now();
        let v = check(&AppendLog, &h, BUDGET);
        eprintln!("2000-op randomized history with one stale read: refuted in {:?}", started.elapsed());
        assert_not_linearizable(&v);
        let text = v.to_string();
        eprintln!("{text}");
        assert!(text.contains(&format!("client {}: Read invoked at {},", h[r].client, h[r].invoke)), "{text}");
    }

    /// Like [`simulate_log`] for a register written with values from `1..=values`.
    fn simulate_register(rng: &mut Rng, clients: u64, ops: usize, unknown_percent: u64, values: u64) -> Vec<RegOp> {
        let mut clock = vec![0; clients as usize];
        // (client, written value or None for a read, invoke, ret, effect, unknown, happens)
        let mut planned = Vec::with_capacity(ops);
        for _ in 0..ops {
            let client = rng.below(clients);
            let invoke = clock[client as usize] + rng.below(20);
            let ret = invoke + rng.below(100);
            let effect = invoke + rng.below(ret - invoke + 1);
            clock[client as usize] = ret;
            let value = rng.chance(50).then(|| rng.below(values) + 1);
            let unknown = value.is_some() && rng.chance(unknown_percent);
            let happens = !unknown || rng.chance(50);
            planned.push((client, value, invoke, ret, effect, unknown, happens));
        }
        let mut order: Vec<usize> = (0..planned.len()).collect();
        order.sort_by_key(|&i| (planned[i].4, i));
        let mut register = None;
        let mut reads = vec![None; planned.len()];
        for i in order {
            match planned[i].1 {
                Some(v) if planned[i].6 => register = Some(v),
                Some(_) => {}
                None => reads[i] = register,
            }
        }
        planned
            .into_iter()
            .zip(reads)
            .map(|((client, value, invoke, ret, _, unknown, _), seen)| match value {
                Some(v) if unknown => Operation::unknown(client, RegisterInput::Write(v), invoke),
                Some(v) => write(client, invoke, ret, v),
                None => get(client, invoke, ret, seen),
            })
            .collect()
    }

    #[test]
    fn randomized_register_histories_of_2000_ops() {
        // Few values written by many writers (no unknowns: each unknown write of a value others also
        // write stays optional throughout, and refuting then needs every subset of them), and many
        // values with unknown writes (which the model settles).
        for (values, unknown_percent) in [(20, 0), (100_000, 5)] {
            let mut rng = Rng(0x0BAD_CAFE_1357_9BDF ^ values);
            let mut h = simulate_register(&mut rng, 8, 2000, unknown_percent, values);
            let started = Instant::now();
            let v = reg(&h);
            eprintln!("2000-op register history, {values} values: {v} in {:?}", started.elapsed());
            assert_eq!(v, Verdict::Linearizable, "{v}");

            // A read in the middle returns a value nobody wrote.
            let r = (1000..h.len()).find(|&r| h[r].input == RegisterInput::Read).expect("a read");
            let ret = h[r].completion.as_ref().map_or(h[r].invoke, |c| c.0);
            h[r] = get(h[r].client, h[r].invoke, ret, Some(values + 1));
            let started = Instant::now();
            let v = reg(&h);
            eprintln!("... with one read of a value never written: refuted in {:?}", started.elapsed());
            assert_not_linearizable(&v);
            assert!(v.to_string().contains(&format!("the read returned Some({})", values + 1)), "{v}");
        }
    }

    /// Exhaustive search over orders, for cross-checking small histories.
    fn brute_force<M: Model>(model: &M, h: &[Operation<M::Input, M::Output>]) -> bool {
        fn go<M: Model>(
            model: &M,
            h: &[Operation<M::Input, M::Output>],
            placed: &mut [bool],
            state: &M::State,
        ) -> bool {
            if h.iter().zip(placed.iter()).all(|(op, &p)| p || op.completion.is_none()) {
                return true;
            }
            for b in 0..h.len() {
                let must_wait = h.iter().enumerate().any(|(a, op)| {
                    a != b && !placed[a] && op.completion.as_ref().is_some_and(|(ret, _)| *ret < h[b].invoke)
                });
                if placed[b] || must_wait {
                    continue;
                }
                if let Some(next) = model.step(state, &h[b].input, h[b].completion.as_ref().map(|(_, o)| o)) {
                    placed[b] = true;
                    if go(model, h, placed, &next) {
                        return true;
                    }
                    placed[b] = false;
                }
            }
            false
        }
        go(model, h, &mut vec![false; h.len()], &model.init())
    }

    #[test]
    fn agrees_with_brute_force_on_small_register_histories() {
        let mut rng = Rng(0xDEAD_BEEF_0000_0042);
        let mut verdicts = [0; 2];
        for _ in 0..3000 {
            let n = 2 + rng.below(6) as usize;
            let h: Vec<RegOp> = (0..n)
                .map(|_| {
                    let client = rng.below(3);
                    let invoke = rng.below(12);
                    let ret = invoke + rng.below(6);
                    let value = |rng: &mut Rng| (rng.below(4) > 0).then(|| rng.below(3) + 1);
                    match (rng.below(2), rng.chance(20)) {
                        (0, true) => Operation::unknown(client, RegisterInput::Write(rng.below(3) + 1), invoke),
                        (0, false) => write(client, invoke, ret, rng.below(3) + 1),
                        (_, true) => Operation::unknown(client, RegisterInput::Read, invoke),
                        (_, false) => get(client, invoke, ret, value(&mut rng)),
                    }
                })
                .collect();
            let expected = brute_force(&Register, &h);
            let v = reg(&h);
            assert_eq!(v.is_linearizable(), expected, "history {h:?}: {v}");
            verdicts[usize::from(expected)] += 1;
        }
        assert!(verdicts[0] > 300 && verdicts[1] > 300, "both verdicts are exercised: {verdicts:?}");
    }

    #[test]
    fn agrees_with_brute_force_on_small_log_histories() {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        let mut verdicts = [0; 2];
        for round in 0..3000 {
            // Every third round reuses ids, so that settling must not assume they are unique.
            let ids = if round % 3 == 0 { 2 } else { u64::MAX };
            let n = 2 + rng.below(6) as usize;
            let mut h = simulate_log(&mut rng, 3, n, 30, ids);
            if rng.chance(50) {
                let r = rng.below(h.len() as u64) as usize;
                if let Some((_, LogOutput::Read(seen))) = &mut h[r].completion {
                    match rng.below(3) {
                        0 if !seen.is_empty() => {
                            seen.remove(rng.below(seen.len() as u64) as usize);
                        }
                        1 if seen.len() > 1 => seen.swap(0, 1),
                        _ => seen.push(rng.below(8) + 1),
                    }
                }
            }
            let expected = brute_force(&AppendLog, &h);
            let v = log(&h);
            assert_eq!(v.is_linearizable(), expected, "history {h:?}: {v}");
            verdicts[usize::from(expected)] += 1;
        }
        assert!(verdicts[0] > 300 && verdicts[1] > 300, "both verdicts are exercised: {verdicts:?}");
    }
}
