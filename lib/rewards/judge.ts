// The two Python programs of the code reward. The solution never shares a process with the code that
// judges it:
// - RUNNER runs in the sandbox. It compiles the solution, runs it, then answers calls: each request
//   line names a function of the solution and its arguments (plain data); the reply is the result
//   as plain data, the name of the exception it raised, or a refusal when the result is not plain
//   data. Everything it sends is untrusted: a solution that takes the runner over can only choose
//   what plain data to answer, which it could have returned honestly.
// - JUDGE runs outside the sandbox and never runs model code. It runs the tests (trusted: the data
//   set's asserts, a HumanEval `check` and the prompt's helper functions) with the function under
//   test, and any other name the tests take from the solution, bound to a proxy that asks the
//   runner. Replies are decoded by `json` with a hook that builds only exact builtin types (None,
//   bool, int, float, str, bytes, bytearray, complex, list, tuple, dict, set, frozenset; an
//   iterator as an iterator over a list), so every comparison, `abs`, `math.isclose` and `set(...)`
//   the tests do runs on values of the judge's own making. Verdicts go to fd 3, which only the judge
//   can write to.
// Wire format, both ways: one JSON value per line; a JSON object is always a one-key tagged
// container (`t` tuple, `d` dict as [key, value] pairs, `s` set, `fs` frozenset, `b`/`ba` bytes and
// bytearray as hex, `c` complex, `it` iterator). Both sides read and write it with json's C
// accelerator (`_json`) directly: importing json (and with it re) and ast would double the
// start-up of each program, and the code reward starts two per completion.

// Shared by both programs: the reader (json's C scanner with a caller's hook for tagged objects)
// and the writer (exact types; `lenient` lets the runner send subclasses as their base values).
const CODEC = String.raw`
import _json
class NotPlainData(Exception):
    """A value crossing between the judge and the sandbox is not plain data."""
_INF = float('inf')
_CONSTANTS = {'NaN': float('nan'), 'Infinity': _INF, '-Infinity': -_INF}
_BASES = (int, float, str, list, tuple, dict, set, frozenset, bytes, bytearray, complex)
def reader(hook):
    # json's own C scanner, driven without importing json (and re): one value per line.
    class Options:
        strict = True
        object_hook = None
        object_pairs_hook = staticmethod(hook)
        parse_float = float
        parse_int = int
        parse_constant = staticmethod(_CONSTANTS.__getitem__)
    scan = _json.make_scanner(Options())
    def read(line):
        try:
            value, end = scan(line, 0)
        except NotPlainData:
            raise
        except Exception:
            raise NotPlainData('unreadable')
        if line[end:].strip():
            raise NotPlainData('trailing data')
        return value
    return read
def dump(value, lenient):
    # Exact types only; with lenient (the runner), a subclass goes as its base type's value and
    # an iterator as its items.
    out = []
    put = out.append
    esc = _json.encode_basestring_ascii
    def items(tag, xs, depth):
        put('{"%s":[' % tag if tag else '[')
        first = True
        for x in xs:
            if not first:
                put(',')
            first = False
            w(x, depth + 1)
        put(']}' if tag else ']')
    def w(x, depth):
        if depth > 100:
            raise NotPlainData('nested too deeply')
        t = type(x)
        if x is None:
            put('null')
        elif t is bool:
            put('true' if x else 'false')
        elif t is int:
            put(int.__repr__(x))
        elif t is float:
            put('NaN' if x != x else 'Infinity' if x == _INF else '-Infinity' if x == -_INF else float.__repr__(x))
        elif t is str:
            put(esc(x))
        elif t is list:
            items('', x, depth)
        elif t is tuple:
            items('t', x, depth)
        elif t is set or t is frozenset:
            items('s' if t is set else 'fs', x, depth)
        elif t is dict:
            put('{"d":[')
            first = True
            for k, v in x.items():
                put('[' if first else ',[')
                first = False
                w(k, depth + 1)
                put(',')
                w(v, depth + 1)
                put(']')
            put(']}')
        elif t is bytes or t is bytearray:
            put('{"%s":"%s"}' % ('b' if t is bytes else 'ba', x.hex()))
        elif t is complex:
            put('{"c":[')
            w(x.real, depth + 1)
            put(',')
            w(x.imag, depth + 1)
            put(']}')
        elif lenient:
            for base in _BASES:
                if isinstance(x, base):
                    if base is dict:
                        return w(dict(dict.items(x)), depth)
                    return w(base(x) if base in (list, tuple, set, frozenset) else base.__new__(base, x), depth)
            if hasattr(t, '__next__'):
                return items('it', list(x), depth)
            raise NotPlainData(t.__name__)
        else:
            raise NotPlainData(t.__name__)
    w(value, 0)
    return ''.join(out)
`;

/** Runs in the sandbox: the solution, then the calls the judge asks for. */
export const RUNNER = CODEC + String.raw`
import os, sys
def main():
    inp = sys.stdin.buffer
    reply = os.fdopen(os.dup(1), 'w', encoding='utf-8', errors='surrogatepass')
    os.dup2(2, 1)
    def say(line):
        reply.write(line + '\n')
        reply.flush()
    n = int(inp.readline())
    code = inp.read(n).decode('utf-8', 'surrogateescape')
    try:
        compiled = compile(code, 'solution.py', 'exec')
    except BaseException as e:
        say('S error ' + type(e).__name__)
        return
    say('S ok')
    scope = {'__name__': 'solution', '__builtins__': __builtins__}
    try:
        exec(compiled, scope)
    except BaseException as e:
        say('X error ' + type(e).__name__)
        return
    say('X ok')
    def hook(pairs):
        (tag, v), = pairs
        if tag == 't': return tuple(v)
        if tag == 'd': return {k: x for k, x in v}
        if tag == 's': return set(v)
        if tag == 'fs': return frozenset(v)
        if tag == 'b': return bytes.fromhex(v)
        if tag == 'ba': return bytearray.fromhex(v)
        if tag == 'c': return complex(v[0], v[1])
        if tag == 'it': return iter(v)
        raise NotPlainData(tag)
    read = reader(hook)
    def failed(e):
        return dump(['raise', type(e).__name__], True)
    while True:
        line = inp.readline()
        if not line:
            return
        try:
            name, args, kwargs = read(line.decode('utf-8', 'surrogateescape'))
            if name not in scope:
                raise NameError(name)
            fn = scope[name]
        except BaseException as e:
            say(failed(e))
            continue
        try:
            r = fn if args is None else fn(*args, **kwargs)
        except BaseException as e:
            say(failed(e))
            continue
        try:
            say(dump(['ok', r], True))
        except BaseException:
            say(dump(['refuse', type(r).__name__], True))
main()
sys.stdout.flush()
os._exit(0)
`;

/** Runs outside the sandbox, never running model code: the tests, and the verdicts on fd 3. */
export const JUDGE = CODEC + String.raw`
import _ast, builtins, os, sys
# Exceptions the solution may raise into a test, by name: only the builtin classes, so a name
# from the sandbox can never pick anything else.
EXCEPTIONS = {n: c for n, c in vars(builtins).items()
              if isinstance(c, type) and issubclass(c, Exception) and n not in ('StopIteration', 'StopAsyncIteration')}
MAX_REPLY = 64 << 20

class CandidateError(Exception):
    """The solution raised an exception that is not a builtin one (args[0]: its name)."""

class SandboxGone(Exception):
    """The sandboxed program stopped answering."""

def _list(v):
    if type(v) is not list:
        raise NotPlainData('bad container')
    return v

def _number(v):
    if type(v) is not int and type(v) is not float:
        raise NotPlainData('bad complex')
    return v

def decode_hook(pairs):
    # Every JSON object in a reply is one tagged container; everything the scanner builds is an
    # exact builtin type already, so the result holds nothing with methods of the sandbox's making.
    if len(pairs) != 1:
        raise NotPlainData('bad object')
    tag, v = pairs[0]
    if tag == 't':
        return tuple(_list(v))
    if tag == 'd':
        d = {}
        for kv in _list(v):
            if type(kv) is not list or len(kv) != 2:
                raise NotPlainData('bad dict item')
            d[kv[0]] = kv[1]
        return d
    if tag == 's':
        return set(_list(v))
    if tag == 'fs':
        return frozenset(_list(v))
    if tag == 'b' or tag == 'ba':
        if type(v) is not str:
            raise NotPlainData('bad bytes')
        return (bytes if tag == 'b' else bytearray).fromhex(v)
    if tag == 'c':
        v = _list(v)
        if len(v) != 2:
            raise NotPlainData('bad complex')
        return complex(_number(v[0]), _number(v[1]))
    if tag == 'it':
        return iter(_list(v))
    raise NotPlainData('unknown tag')

def walk(tree):
    # ast.walk's breadth-first order, over the _ast nodes compile() returns (importing ast costs
    # more than the rest of the judge's start-up).
    todo = [tree]
    for node in todo:
        for field in node._fields:
            v = getattr(node, field, None)
            if isinstance(v, list):
                todo.extend(x for x in v if isinstance(x, _ast.AST))
            elif isinstance(v, _ast.AST):
                todo.append(v)
    return todo

def main():
    inp = sys.stdin.buffer
    calls = sys.stdout
    verdicts = os.fdopen(3, 'w')
    read = reader(decode_hook)
    def say(*words):
        verdicts.write(' '.join(words) + '\n')
        verdicts.flush()
    count = int(inp.readline())
    parts = []
    for _ in range(count):
        n = int(inp.readline())
        parts.append(inp.read(n).decode())
    context, entry, tests = parts[0], parts[1], parts[2:]
    state = {'alive': True}
    def reply_line():
        if not state['alive']:
            raise SandboxGone()
        line = inp.readline(MAX_REPLY + 1)
        if not line or len(line) > MAX_REPLY or not line.endswith(b'\n'):
            state['alive'] = False
            raise SandboxGone()
        return line
    # The runner's first line is written before any of the solution runs, so it can be trusted.
    first = reply_line().split()
    if first[:2] != [b'S', b'ok']:
        say('syntax', 'error', first[2].decode('ascii', 'replace') if len(first) > 2 else 'unknown')
        return
    say('syntax', 'ok')
    second = reply_line().split()
    if second[:2] != [b'X', b'ok']:
        say('exec', 'error', second[2].decode('ascii', 'replace') if len(second) > 2 else 'unknown')
        return

    def call(name, args, kwargs):
        request = [name, None, None] if args is None else [name, list(args), kwargs]
        calls.write(dump(request, False) + '\n')
        calls.flush()
        try:
            r = read(reply_line().decode('ascii'))
        except UnicodeDecodeError:
            raise NotPlainData('bad reply')
        if type(r) is not list or len(r) != 2 or type(r[0]) is not str:
            raise NotPlainData('bad reply')
        kind, v = r
        if kind == 'ok':
            return v
        if kind == 'raise' and type(v) is str:
            if v in EXCEPTIONS:
                raise EXCEPTIONS[v]()
            # Any other exception (SystemExit, one of the solution's classes) fails the test under
            # its name, kept to identifier characters since the sandbox chose it.
            raise CandidateError(''.join(ch for ch in v[:60] if ch.isalnum() or ch in '_.') or '?')
        raise NotPlainData(v if type(v) is str else 'bad reply')

    class Remote:
        __slots__ = ('_name',)
        def __init__(self, name):
            self._name = name
        def __call__(self, *args, **kwargs):
            return call(self._name, args, kwargs)
        def __repr__(self):
            return '<function %s in the sandbox>' % self._name
        def __bool__(self):
            raise NotPlainData(self._name + ' is not plain data')

    scope = {'__name__': '__main__', '__builtins__': builtins}
    if context:
        try:
            exec(compile(context, 'context.py', 'exec'), scope)
        except BaseException as e:
            say('context', 'error', type(e).__name__)
            return
    trees = []
    for test in tests:
        try:
            trees.append(walk(compile(test, 'test.py', 'exec', _ast.PyCF_ONLY_AST)))
        except SyntaxError:
            pass  # fails when it runs
    defined, used, called = set(scope), set(), []
    for nodes in trees:
        for node in nodes:
            if isinstance(node, _ast.Name):
                (used if isinstance(node.ctx, _ast.Load) else defined).add(node.id)
            elif isinstance(node, (_ast.FunctionDef, _ast.AsyncFunctionDef, _ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, _ast.arg):
                defined.add(node.arg)
            elif isinstance(node, (_ast.Import, _ast.ImportFrom)):
                defined.update((a.asname or a.name).split('.')[0] for a in node.names)
            elif isinstance(node, _ast.Call) and isinstance(node.func, _ast.Name):
                called.append(node.func.id)
    free = used - defined
    if not entry and trees:
        # The function under test, when not named: the first name the first test calls and does
        # not define; a builtin name only when the test calls nothing else (a solution may shadow
        # 'sum' when the task asks for a function called 'sum').
        first = [n.func.id for n in trees[0] if isinstance(n, _ast.Call) and isinstance(n.func, _ast.Name) and n.func.id in free]
        own = [n for n in first if not hasattr(builtins, n)]
        entry = (own or first or [''])[0]
    for n in sorted(n for n in free if not hasattr(builtins, n) and n != entry):
        if n in sys.stdlib_module_names:
            scope[n] = __import__(n)
        elif n in called:
            scope[n] = Remote(n)
        else:
            # A value of the solution the tests read (not call): fetched once, as plain data.
            try:
                scope[n] = call(n, None, None)
            except NameError:
                pass  # the solution has none either: the test meets a NameError, as it would have
            except Exception:
                scope[n] = Remote(n)
    if entry:
        scope[entry] = Remote(entry)
    for k, test in enumerate(tests):
        try:
            exec(compile(test, 'test_%d.py' % k, 'exec'), scope)
            say('test', str(k), 'pass')
        except BaseException as e:
            say('test', str(k), 'fail', e.args[0] if type(e) is CandidateError else type(e).__name__)
    say('done')
try:
    main()
except SandboxGone:
    pass  # the program died before it could answer: no verdict, every test fails
`;
