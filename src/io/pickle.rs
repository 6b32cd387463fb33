//! A small, bounded pickle machine for the opcodes `torch.save` writes (protocol 2, plus the
//! protocol-4 framing and stack globals).
//!
//! It runs nothing: a `GLOBAL` is only a name, `REDUCE` records the call for the caller to
//! interpret (only `collections.OrderedDict()` becomes a dict here), and a persistent id is
//! kept as it is. Objects live in one flat arena and refer to each other by index, so shared
//! memo references cost nothing and cycles cannot leak or overflow the stack on drop. Every
//! read is bounds-checked, and the stack, mark nesting, object count and tuple nesting are
//! capped; a malformed pickle is an error naming the byte it failed at.

use std::collections::HashMap;

/// Index of an object in a [`Pickle`]'s arena.
pub(crate) type Id = usize;

/// Most objects one pickle may create (`torch.save` writes about 30 per tensor).
const MAX_OBJECTS: usize = 1 << 23;
/// Deepest `MARK` nesting (a state dict needs about 6).
const MAX_MARKS: usize = 64;
/// Deepest nesting of tuples, lists and dicts built from other containers.
pub(crate) const MAX_NESTING: u16 = 64;

/// A Python value as the pickle describes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Obj {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An int (at most 128 bits).
    Int(i128),
    /// A float.
    Float(f64),
    /// A `str`.
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Id>),
    /// A list.
    List(Vec<Id>),
    /// A dict or `collections.OrderedDict`, in insertion order (keys may repeat).
    Dict(Vec<(Id, Id)>),
    /// A global name (`module.name`), not resolved.
    Global {
        /// Module path.
        module: String,
        /// Attribute name.
        name: String,
    },
    /// `func(*args)` from `REDUCE` / `NEWOBJ`, with the `BUILD` state if one followed.
    Call {
        /// The callable (a [`Obj::Global`]).
        func: Id,
        /// The argument tuple.
        args: Id,
        /// `__setstate__` argument, if any.
        state: Option<Id>,
    },
    /// A persistent id (`BINPERSID`): for `torch.save`, a storage reference tuple.
    PersId(Id),
}

/// A parsed pickle: its objects and the one `STOP` returned.
#[derive(Debug)]
pub(crate) struct Pickle {
    objs: Vec<Obj>,
    root: Id,
}

impl Pickle {
    /// The value `STOP` returned.
    pub(crate) fn root(&self) -> Id {
        self.root
    }

    /// The object `id` (ids come from this pickle, so they are always in range).
    pub(crate) fn get(&self, id: Id) -> &Obj {
        self.objs.get(id).unwrap_or(&Obj::None)
    }

    /// Every object, in creation order.
    pub(crate) fn objects(&self) -> &[Obj] {
        &self.objs
    }

    /// An int that must be a size or index (non-negative).
    pub(crate) fn as_u64(&self, id: Id) -> Result<u64, String> {
        match self.get(id) {
            Obj::Int(i) => u64::try_from(*i).map_err(|_| format!("expected a size, found {i}")),
            _ => Err(format!("expected an int, found {}", self.describe(id))),
        }
    }

    /// An int that fits an `i64`.
    pub(crate) fn as_i64(&self, id: Id) -> Result<i64, String> {
        match self.get(id) {
            Obj::Int(i) => i64::try_from(*i).map_err(|_| format!("int {i} out of range")),
            _ => Err(format!("expected an int, found {}", self.describe(id))),
        }
    }

    /// A float (an int is taken as its value).
    pub(crate) fn as_f64(&self, id: Id) -> Result<f64, String> {
        match self.get(id) {
            Obj::Float(f) => Ok(*f),
            Obj::Int(i) => Ok(*i as f64),
            _ => Err(format!("expected a float, found {}", self.describe(id))),
        }
    }

    /// A short description of an object for error messages.
    pub(crate) fn describe(&self, id: Id) -> String {
        match self.get(id) {
            Obj::None => "None".into(),
            Obj::Bool(b) => format!("bool {}", if *b { "True" } else { "False" }),
            Obj::Int(i) => format!("int {i}"),
            Obj::Float(f) => format!("float {f:?}"),
            Obj::Str(s) if s.len() <= 40 => format!("str {s:?}"),
            Obj::Str(s) => format!("str of {} bytes", s.len()),
            Obj::Bytes(b) => format!("bytes of length {}", b.len()),
            Obj::Tuple(v) => format!("tuple of {} items", v.len()),
            Obj::List(v) => format!("list of {} items", v.len()),
            Obj::Dict(v) => format!("dict of {} items", v.len()),
            Obj::Global { module, name } => format!("{module}.{name}"),
            Obj::Call { func, .. } => format!("call of {}", self.describe(*func)),
            Obj::PersId(_) => "persistent id".into(),
        }
    }
}

/// Parses the pickle starting at `bytes[start]`; returns it and the offset just past its
/// `STOP`. Errors name the byte offset (from the start of `bytes`) they happened at.
pub(crate) fn parse(bytes: &[u8], start: usize) -> Result<(Pickle, usize), String> {
    let mut m = Machine {
        bytes,
        pos: start,
        objs: Vec::new(),
        depth: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        let at = m.pos;
        let op = m.take(1).map_err(|e| format!("byte {at}: {e}"))?[0];
        match m.step(op) {
            Ok(Some(root)) => {
                let end = m.pos;
                return Ok((Pickle { objs: m.objs, root }, end));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("byte {at} (opcode {}): {e}", opcode_name(op))),
        }
    }
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    objs: Vec<Obj>,
    /// Container nesting of each object (0 for scalars).
    depth: Vec<u16>,
    stack: Vec<Id>,
    marks: Vec<Vec<Id>>,
    memo: HashMap<u64, Id>,
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "pickle is truncated: needs {n} more bytes, {} left",
                    self.bytes.len().saturating_sub(self.pos)
                )
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let s = self.take(N)?;
        <[u8; N]>::try_from(s).map_err(|_| "internal length mismatch".to_string())
    }

    fn u32_len(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.arr()?) as usize)
    }

    fn u64_len(&mut self) -> Result<usize, String> {
        usize::try_from(u64::from_le_bytes(self.arr()?)).map_err(|_| "length too large".into())
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("pickle is truncated: unterminated text argument")?;
        let s = self.take(n + 1)?;
        let s = s.get(..n).unwrap_or_default();
        String::from_utf8(s.to_vec()).map_err(|_| "text argument is not UTF-8".into())
    }

    fn text(&mut self, n: usize) -> Result<String, String> {
        let s = self.take(n)?.to_vec();
        String::from_utf8(s).map_err(|_| "string is not valid UTF-8".into())
    }

    fn alloc(&mut self, obj: Obj, depth: u16) -> Result<Id, String> {
        if self.objs.len() >= MAX_OBJECTS {
            return Err(format!("more than {MAX_OBJECTS} objects"));
        }
        if depth > MAX_NESTING {
            return Err(format!(
                "containers nested deeper than {MAX_NESTING} levels"
            ));
        }
        self.objs.push(obj);
        self.depth.push(depth);
        Ok(self.objs.len() - 1)
    }

    fn push(&mut self, obj: Obj) -> Result<(), String> {
        let id = self.alloc(obj, 0)?;
        self.stack.push(id);
        Ok(())
    }

    fn pop(&mut self) -> Result<Id, String> {
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn top(&self) -> Result<Id, String> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| "stack underflow".into())
    }

    /// Pops everything down to the last `MARK`.
    fn pop_mark(&mut self) -> Result<Vec<Id>, String> {
        let outer = self.marks.pop().ok_or("no MARK to pop to")?;
        Ok(std::mem::replace(&mut self.stack, outer))
    }

    fn nesting(&self, items: &[Id]) -> u16 {
        let inner = items
            .iter()
            .filter_map(|&i| self.depth.get(i))
            .max()
            .copied();
        inner.unwrap_or(0).saturating_add(1)
    }

    fn push_tuple(&mut self, items: Vec<Id>) -> Result<(), String> {
        let depth = self.nesting(&items);
        let id = self.alloc(Obj::Tuple(items), depth)?;
        self.stack.push(id);
        Ok(())
    }

    fn int(&mut self, v: i128) -> Result<(), String> {
        self.push(Obj::Int(v))
    }

    fn long(&mut self, n: usize) -> Result<(), String> {
        if n > 16 {
            return Err(format!("integer of {n} bytes is wider than 128 bits"));
        }
        let b = self.take(n)?;
        let mut buf = [if b.last().is_some_and(|&x| x & 0x80 != 0) {
            0xff
        } else {
            0
        }; 16];
        buf[..n].copy_from_slice(b);
        self.int(i128::from_le_bytes(buf))
    }

    fn memo_put(&mut self, key: u64) -> Result<(), String> {
        let id = self.top()?;
        self.memo.insert(key, id);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), String> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| format!("memo key {key} was never stored"))?;
        self.stack.push(id);
        Ok(())
    }

    /// Adds `items` to the list or dict `target` (APPEND(S) / SETITEM(S)).
    fn extend(&mut self, target: Id, items: Vec<Id>, pairs: bool) -> Result<(), String> {
        let child = self.nesting(&items);
        let obj = self.objs.get_mut(target).ok_or("bad object id")?;
        match (obj, pairs) {
            (Obj::List(list), false) => list.extend(items),
            (Obj::Dict(dict), true) => {
                if !items.len().is_multiple_of(2) {
                    return Err("SETITEMS with an odd number of items".into());
                }
                dict.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
            }
            (other, _) => {
                let want = if pairs { "dict" } else { "list" };
                return Err(format!(
                    "expected a {want} to add items to, found {other:?}"
                ));
            }
        }
        let d = self.depth.get_mut(target).ok_or("bad object id")?;
        *d = (*d).max(child);
        if *d > MAX_NESTING {
            return Err(format!(
                "containers nested deeper than {MAX_NESTING} levels"
            ));
        }
        Ok(())
    }

    fn global(&mut self, module: String, name: String) -> Result<(), String> {
        self.push(Obj::Global { module, name })
    }

    fn call(&mut self) -> Result<(), String> {
        let args = self.pop()?;
        let func = self.pop()?;
        let (Obj::Global { module, name }, Obj::Tuple(a)) = (&self.objs[func], &self.objs[args])
        else {
            return Err("REDUCE needs a global and an argument tuple".into());
        };
        let obj = if module == "collections" && name == "OrderedDict" && a.is_empty() {
            Obj::Dict(Vec::new())
        } else {
            Obj::Call {
                func,
                args,
                state: None,
            }
        };
        let depth = self.nesting(&[args]);
        let id = self.alloc(obj, depth)?;
        self.stack.push(id);
        Ok(())
    }

    fn build(&mut self) -> Result<(), String> {
        let state = self.pop()?;
        let target = self.top()?;
        match self.objs.get_mut(target) {
            // An OrderedDict's instance __dict__ (a state dict's `_metadata`): not needed.
            Some(Obj::Dict(_)) => Ok(()),
            Some(Obj::Call { state: s, .. }) => {
                *s = Some(state);
                Ok(())
            }
            _ => Err(format!("BUILD on {}", self.describe(target))),
        }
    }

    fn describe(&self, id: Id) -> String {
        match self.objs.get(id) {
            Some(o) => format!("{o:?}").chars().take(60).collect(),
            None => "nothing".into(),
        }
    }

    /// Runs one opcode; returns the result at `STOP`.
    fn step(&mut self, op: u8) -> Result<Option<Id>, String> {
        match op {
            0x80 => {
                let proto = self.take(1)?[0];
                if !(2..=5).contains(&proto) {
                    return Err(format!("unsupported pickle protocol {proto}"));
                }
            }
            0x95 => {
                self.take(8)?; // FRAME: a length hint
            }
            b'.' => {
                let root = self.pop()?;
                if !self.marks.is_empty() {
                    return Err("STOP inside an unfinished MARK".into());
                }
                return Ok(Some(root));
            }
            b'(' => {
                if self.marks.len() >= MAX_MARKS {
                    return Err(format!("MARKs nested deeper than {MAX_MARKS} levels"));
                }
                let outer = std::mem::take(&mut self.stack);
                self.marks.push(outer);
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?;
                self.stack.push(top);
            }
            b'N' => self.push(Obj::None)?,
            0x88 => self.push(Obj::Bool(true))?,
            0x89 => self.push(Obj::Bool(false))?,
            b'J' => {
                let v = i32::from_le_bytes(self.arr()?);
                self.int(v.into())?
            }
            b'K' => {
                let v = self.take(1)?[0];
                self.int(v.into())?
            }
            b'M' => {
                let v = u16::from_le_bytes(self.arr()?);
                self.int(v.into())?
            }
            0x8a => {
                let n = self.take(1)?[0] as usize;
                self.long(n)?
            }
            0x8b => {
                let n = self.u32_len()?;
                self.long(n)?
            }
            b'G' => {
                let v = f64::from_be_bytes(self.arr()?);
                self.push(Obj::Float(v))?
            }
            b'X' => {
                let n = self.u32_len()?;
                let s = self.text(n)?;
                self.push(Obj::Str(s))?
            }
            0x8c => {
                let n = self.take(1)?[0] as usize;
                let s = self.text(n)?;
                self.push(Obj::Str(s))?
            }
            0x8d => {
                let n = self.u64_len()?;
                let s = self.text(n)?;
                self.push(Obj::Str(s))?
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => self.u32_len()?,
                    b'C' => self.take(1)?[0] as usize,
                    _ => self.u64_len()?,
                };
                let b = self.take(n)?.to_vec();
                self.push(Obj::Bytes(b))?
            }
            b')' => self.push_tuple(Vec::new())?,
            b't' => {
                let items = self.pop_mark()?;
                self.push_tuple(items)?
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let at = self.stack.len().checked_sub(n).ok_or("stack underflow")?;
                let items = self.stack.split_off(at);
                self.push_tuple(items)?
            }
            b']' => self.push(Obj::List(Vec::new()))?,
            b'}' => self.push(Obj::Dict(Vec::new()))?,
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Obj::List(Vec::new()))?;
                self.extend(self.top()?, items, false)?
            }
            b'd' => {
                let items = self.pop_mark()?;
                self.push(Obj::Dict(Vec::new()))?;
                self.extend(self.top()?, items, true)?
            }
            b'a' => {
                let item = self.pop()?;
                self.extend(self.top()?, vec![item], false)?
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend(self.top()?, items, false)?
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.extend(self.top()?, vec![key, value], true)?
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.extend(self.top()?, items, true)?
            }
            b'q' => {
                let k = self.take(1)?[0];
                self.memo_put(k.into())?
            }
            b'r' => {
                let k = u32::from_le_bytes(self.arr()?);
                self.memo_put(k.into())?
            }
            0x94 => self.memo_put(self.memo.len() as u64)?,
            b'h' => {
                let k = self.take(1)?[0];
                self.memo_get(k.into())?
            }
            b'j' => {
                let k = u32::from_le_bytes(self.arr()?);
                self.memo_get(k.into())?
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.global(module, name)?
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Obj::Str(m), Obj::Str(n)) = (&self.objs[module], &self.objs[name]) else {
                    return Err("STACK_GLOBAL needs two strings".into());
                };
                let (m, n) = (m.clone(), n.clone());
                self.global(m, n)?
            }
            b'R' | 0x81 => self.call()?,
            b'b' => self.build()?,
            b'Q' => {
                let pid = self.pop()?;
                let depth = self.nesting(&[pid]);
                let id = self.alloc(Obj::PersId(pid), depth)?;
                self.stack.push(id);
            }
            _ => return Err("unsupported opcode".into()),
        }
        Ok(None)
    }
}

/// The opcode's name for error messages.
fn opcode_name(op: u8) -> String {
    let name = match op {
        0x80 => "PROTO",
        0x95 => "FRAME",
        b'.' => "STOP",
        b'(' => "MARK",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'N' => "NONE",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'M' => "BININT2",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'G' => "BINFLOAT",
        b'X' => "BINUNICODE",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8e => "BINBYTES8",
        b')' => "EMPTY_TUPLE",
        b't' => "TUPLE",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        b']' => "EMPTY_LIST",
        b'}' => "EMPTY_DICT",
        b'l' => "LIST",
        b'd' => "DICT",
        b'a' => "APPEND",
        b'e' => "APPENDS",
        b's' => "SETITEM",
        b'u' => "SETITEMS",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        0x94 => "MEMOIZE",
        b'h' => "BINGET",
        b'j' => "LONG_BINGET",
        b'c' => "GLOBAL",
        0x93 => "STACK_GLOBAL",
        b'R' => "REDUCE",
        0x81 => "NEWOBJ",
        b'b' => "BUILD",
        b'Q' => "BINPERSID",
        _ => "",
    };
    if name.is_empty() {
        format!("{op:#04x}")
    } else {
        format!("{name} ({op:#04x})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<(Pickle, usize), String> {
        parse(bytes, 0)
    }

    #[test]
    fn builds_nested_containers_and_memo() {
        // {'a': (1, -2, 3.5), 'b': [None, True]}, with a memo round trip of 'a'.
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'(', 0x8c, 1, b'a', b'q', 1];
        p.extend([b'K', 1, b'J']);
        p.extend((-2i32).to_le_bytes());
        p.push(b'G');
        p.extend(3.5f64.to_be_bytes());
        p.extend([
            0x87, 0x8c, 1, b'b', b']', b'(', b'N', 0x88, b'e', b'u', b'h', 1, b'0', b'.',
        ]);
        let (pk, end) = run(&p).unwrap();
        assert_eq!(end, p.len());
        let Obj::Dict(items) = pk.get(pk.root()) else {
            panic!("not a dict")
        };
        assert_eq!(items.len(), 2);
        let Obj::Tuple(t) = pk.get(items[0].1) else {
            panic!()
        };
        assert_eq!(pk.get(t[1]), &Obj::Int(-2));
        assert_eq!(pk.get(t[2]), &Obj::Float(3.5));
        let Obj::List(l) = pk.get(items[1].1) else {
            panic!()
        };
        assert_eq!(pk.get(l[1]), &Obj::Bool(true));
    }

    #[test]
    fn long1_reads_two_complement() {
        let (pk, _) = run(&[0x80, 2, 0x8a, 2, 0x00, 0xff, b'.']).unwrap();
        assert_eq!(pk.get(pk.root()), &Obj::Int(-256));
        let magic = [
            0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
        ];
        let (pk, _) = run(&[&magic[..], b"."].concat()).unwrap();
        assert_eq!(pk.get(pk.root()), &Obj::Int(0x1950a86a20f9469cfc6c));
    }

    #[test]
    fn hostile_pickles_are_errors() {
        let deep_marks = [vec![0x80, 2], vec![b'('; 1000]].concat();
        assert!(run(&deep_marks).unwrap_err().contains("MARKs nested"));
        let deep_tuples = [vec![0x80, 2, b'N'], vec![0x85; 1000], vec![b'.']].concat();
        assert!(run(&deep_tuples).unwrap_err().contains("nested deeper"));
        assert!(run(&[0x80, 2, b'R']).unwrap_err().contains("underflow"));
        assert!(
            run(&[0x80, 2, b'h', 3])
                .unwrap_err()
                .contains("never stored")
        );
        assert!(
            run(&[0x80, 2, 0xff])
                .unwrap_err()
                .contains("unsupported opcode")
        );
        assert!(
            run(&[0x80, 2, b'X', 9, 0, 0, 0, b'a'])
                .unwrap_err()
                .contains("truncated")
        );
        assert!(run(&[0x80, 2, b'N']).unwrap_err().contains("truncated"));
        assert!(
            run(&[0x80, 2, b'(', b'N', b'.'])
                .unwrap_err()
                .contains("MARK")
        );
        // A list appended to itself is a cycle, not a crash.
        let (pk, _) = run(&[0x80, 2, b']', b'q', 0, b'h', 0, b'a', b'.']).unwrap();
        assert!(matches!(pk.get(pk.root()), Obj::List(l) if l == &[pk.root()]));
    }
}
