# xform.py IN OUT: a .cu file with every `kernel<<<grid, block, ...>>>(args)`
# launch rewritten as `emu_launch(grid, block, [=]() { kernel(args); })`
# and <cuda_runtime.h> replaced by emu.h (tools/dev/cudaemu/run.sh).
import re, sys
s = open(sys.argv[1]).read()
s = s.replace('#include <cuda_runtime.h>', '#include "emu.h"')
out = []
i = 0
while True:
    j = s.find('<<<', i)
    if j < 0:
        out.append(s[i:]); break
    # kernel name: walk back over template args and identifier
    k = j
    if s[k-1] == '>':
        depth = 0
        k -= 1
        while True:
            if s[k] == '>': depth += 1
            elif s[k] == '<':
                depth -= 1
                if depth == 0: break
            k -= 1
    m = re.search(r'[A-Za-z_]\w*$', s[:k])
    start = m.start()
    name = s[start:j]
    e = s.find('>>>', j)
    cfg = s[j+3:e]
    # split cfg at top-level commas
    parts, depth, cur = [], 0, ''
    for ch in cfg:
        if ch in '(': depth += 1
        if ch in ')': depth -= 1
        if ch == ',' and depth == 0:
            parts.append(cur); cur = ''
        else: cur += ch
    parts.append(cur)
    # args: from '(' after >>> to matching ')'
    a0 = s.index('(', e)
    depth = 0; q = a0
    while True:
        if s[q] == '(': depth += 1
        elif s[q] == ')':
            depth -= 1
            if depth == 0: break
        q += 1
    args = s[a0+1:q]
    out.append(s[i:start])
    out.append('emu_launch((unsigned)(%s), (unsigned)(%s), [=]() { %s(%s); })' % (parts[0].strip(), parts[1].strip(), name, args))
    i = q + 1
open(sys.argv[2], 'w').write(''.join(out))
