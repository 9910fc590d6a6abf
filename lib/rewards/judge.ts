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
// bytearray as hex, `c` complex, `it` iterator).

/** Runs in the sandbox: the solution, then the calls the judge asks for. */
export const RUNNER = String.raw`
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
    import json
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
        raise ValueError(tag)
    plain = (str, int, float, bool, type(None))
    def enc(x, depth=0):
        if depth > 100:
            raise ValueError('nested too deeply')
        t = type(x)
        if t in plain:
            return x
        if t is list:
            return [enc(v, depth + 1) for v in x]
        if t is tuple:
            return {'t': [enc(v, depth + 1) for v in x]}
        if t is dict:
            return {'d': [[enc(k, depth + 1), enc(v, depth + 1)] for k, v in x.items()]}
        if t is set or t is frozenset:
            return {'s' if t is set else 'fs': [enc(v, depth + 1) for v in x]}
        if t is bytes or t is bytearray:
            return {'b' if t is bytes else 'ba': x.hex()}
        if t is complex:
            return {'c': [x.real, x.imag]}
        # Subclasses (Counter, OrderedDict, namedtuple, IntEnum...) go as their base type's
        # plain value: the judge builds exact builtins from it whatever the subclass claims.
        for base in (bool, int, float, str, list, tuple, dict, set, frozenset, bytes, bytearray, complex):
            if isinstance(x, base):
                if base is dict:
                    return enc({k: v for k, v in dict.items(x)}, depth)
                return enc(base(x) if base in (list, tuple, set, frozenset) else base.__new__(base, x), depth)
        if hasattr(t, '__next__'):
            return {'it': [enc(v, depth + 1) for v in x]}
        raise TypeError(t.__name__)
    while True:
        line = inp.readline()
        if not line:
            return
        try:
            name, args, kwargs = json.loads(line, object_pairs_hook=hook)
            fn = scope[name]
        except BaseException as e:
            say(json.dumps(['raise', type(e).__name__]))
            continue
        try:
            r = fn if args is None else fn(*args, **kwargs)
        except BaseException as e:
            say(json.dumps(['raise', type(e).__name__]))
            continue
        try:
            say(json.dumps(['ok', enc(r)]))
        except BaseException as e:
            say(json.dumps(['refuse', type(r).__name__]))
main()
sys.stdout.flush()
os._exit(0)
`;

/** Runs outside the sandbox, never running model code: the tests, and the verdicts on fd 3. */
export const JUDGE = String.raw`
import ast, builtins, json, os, sys
MAX_REPLY = 64 << 20
MAX_DEPTH = 100
# Exceptions the candidate may raise into a test, by name: only the builtin classes, so a name
# from the sandbox can never pick anything else.
EXCEPTIONS = {n: c for n, c in vars(builtins).items()
              if isinstance(c, type) and issubclass(c, Exception) and n not in ('StopIteration', 'StopAsyncIteration')}

class CandidateError(Exception):
    """The candidate raised an exception that is not a builtin one."""

class NotPlainData(Exception):
    """A value crossing between the judge and the sandbox is not plain data."""

class SandboxGone(Exception):
    """The sandboxed program stopped answering."""

def encode(x, depth=0):
    # The judge's own values (trusted); exact types only.
    if depth > MAX_DEPTH:
        raise NotPlainData('nested too deeply')
    t = type(x)
    if x is None or t is bool or t is int or t is float or t is str:
        return x
    if t is list:
        return [encode(v, depth + 1) for v in x]
    if t is tuple:
        return {'t': [encode(v, depth + 1) for v in x]}
    if t is dict:
        return {'d': [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in x.items()]}
    if t is set or t is frozenset:
        return {'s' if t is set else 'fs': [encode(v, depth + 1) for v in x]}
    if t is bytes or t is bytearray:
        return {'b' if t is bytes else 'ba': x.hex()}
    if t is complex:
        return {'c': [x.real, x.imag]}
    raise NotPlainData(t.__name__)

def _number(v):
    if type(v) is not int and type(v) is not float:
        raise NotPlainData('bad complex')
    return v

def _items(v):
    if type(v) is not list:
        raise NotPlainData('bad container')
    return v

def decode_hook(pairs):
    # Every JSON object in a reply is one tagged container; everything json builds is an exact
    # builtin type already, so the result holds nothing with methods of the sandbox's making.
    if len(pairs) != 1:
        raise NotPlainData('bad object')
    tag, v = pairs[0]
    if tag == 't':
        return tuple(_items(v))
    if tag == 'd':
        d = {}
        for kv in _items(v):
            if type(kv) is not list or len(kv) != 2:
                raise NotPlainData('bad dict item')
            d[kv[0]] = kv[1]
        return d
    if tag == 's':
        return set(_items(v))
    if tag == 'fs':
        return frozenset(_items(v))
    if tag == 'b' or tag == 'ba':
        if type(v) is not str:
            raise NotPlainData('bad bytes')
        return (bytes if tag == 'b' else bytearray).fromhex(v)
    if tag == 'c':
        v = _items(v)
        if len(v) != 2:
            raise NotPlainData('bad complex')
        return complex(_number(v[0]), _number(v[1]))
    if tag == 'it':
        return iter(_items(v))
    raise NotPlainData('unknown tag')

def main():
    inp = sys.stdin.buffer
    calls = sys.stdout
    verdicts = os.fdopen(3, 'w')
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
    first = reply_line().split()
    if first[:2] != [b'S', b'ok']:
        say('syntax', 'error', first[2].decode() if len(first) > 2 else 'unknown')
        return
    say('syntax', 'ok')
    second = reply_line().split()
    if second[:2] != [b'X', b'ok']:
        say('exec', 'error', second[2].decode('ascii', 'replace') if len(second) > 2 else 'unknown')
        return

    def call(name, args, kwargs):
        request = [name, None, None] if args is None else [name, encode(list(args)), encode(kwargs)]
        calls.write(json.dumps(request) + '\n')
        calls.flush()
        line = reply_line()
        try:
            r = json.loads(line, object_pairs_hook=decode_hook)
        except NotPlainData:
            raise
        except Exception:
            raise NotPlainData('unreadable reply')
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
            trees.append(ast.parse(test))
        except SyntaxError:
            pass  # fails when it runs
    defined, used = set(scope), set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                (used if isinstance(node.ctx, ast.Load) else defined).add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.arg):
                defined.add(node.arg)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                defined.update((a.asname or a.name).split('.')[0] for a in node.names)
    free = used - defined
    remote = {n for n in free if not hasattr(builtins, n)}
    if not entry:
        # The function under test, when not named: the first name the first test calls and does
        # not define; a builtin name only when the test calls nothing else (a solution may shadow
        # 'sum' when the task asks for a function called 'sum').
        called = [node.func.id for node in (ast.walk(trees[0]) if trees else ())
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in free]
        own = [n for n in called if not hasattr(builtins, n)]
        entry = (own or called or [''])[0]
    called = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                called.add(node.func.id)
    for n in sorted(remote):
        if n != entry and n in sys.stdlib_module_names:
            scope[n] = __import__(n)
        elif n in called or n == entry:
            scope[n] = Remote(n)
        else:
            # A value of the solution the tests read (not call): fetched once, as plain data.
            try:
                scope[n] = call(n, None, None)
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
main()
`;
