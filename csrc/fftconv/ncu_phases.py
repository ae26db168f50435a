"""Join an ncu per-SASS CSV (device_check.sh ncu_sass) with nvdisasm -g output of the same cubin: executed
instructions and stall samples per barrier-delimited phase, per opcode and per source line.

    python3 csrc/fftconv/ncu_phases.py sass_16384.csv kernel.sass
"""
import csv, re, collections, sys
csvf, sassf = sys.argv[1], sys.argv[2]
rows=list(csv.reader(open(csvf))); hdr=rows[1]; data=rows[2:]
iS=hdr.index("Source"); iE=hdr.index("Instructions Executed"); iW=hdr.index("Warp Stall Sampling (All Samples)")
src=open('/work/main/csrc/fftconv/fftconv_monarch.cu').read().splitlines()
ins=[]; cur=(None,0)
for l in open(sassf):
    m=re.search(r'File "([^"]+)", line (\d+)', l)
    if m and l.strip().startswith('//##'): cur=(m.group(1).split('/')[-1], int(m.group(2))); continue
    m=re.match(r'\s*/\*([0-9a-f]{4,})\*/\s+(.*?);', l)
    if m: ins.append((int(m.group(1),16), m.group(2).strip(), cur))
assert len(ins)==len(data)
tot=sum(int(r[iE]) for r in data); stot=sum(int(r[iW]) for r in data)
# segments between barriers
seg=0; segs=collections.defaultdict(lambda: [0,0,collections.Counter(),collections.Counter(), None])
for (addr,txt,(f,ln)),r in zip(ins,data):
    e=int(r[iE]); w=int(r[iW])
    op=txt.split()[1] if txt.startswith('@') else txt.split()[0]
    s=segs[seg]; s[0]+=e; s[1]+=w; s[2][op.split('.')[0]]+=e
    if f=='fftconv_monarch.cu' and ln>=280: s[3][ln]+=e
    if s[4] is None: s[4]=addr
    if 'BAR.SYNC' in txt: seg+=1
print(f"total executed {tot/1e6:.1f} M warp instr, stall samples {stot}")
for k,(e,w,ops,lines,a0) in segs.items():
    if e < 0.003*tot: continue
    top=", ".join(f"{ln}:{src[ln-1].strip()[:38]}" for ln,_ in lines.most_common(3))
    print(f"seg{k:2d} @{a0:05x} {e/tot:6.1%} instr {w/stot:6.1%} stalls | {', '.join(f'{o} {c/e:.0%}' for o,c in ops.most_common(7))}\n        lines: {top}")
# opcode classes overall
cls=collections.Counter()
for (addr,txt,_),r in zip(ins,data):
    op=(txt.split()[1] if txt.startswith('@') else txt.split()[0]).split('.')[0]
    cls[op]+=int(r[iE])
print("ops:", ", ".join(f"{o} {c/tot:.1%}" for o,c in cls.most_common(22)))
# source lines overall (monarch file), top 30 by executed
byline=collections.Counter(); byw=collections.Counter()
for (addr,txt,(f,ln)),r in zip(ins,data):
    key=(f,ln); byline[key]+=int(r[iE]); byw[key]+=int(r[iW])
for (f,ln),c in byline.most_common(40):
    s=src[ln-1].strip()[:70] if f=='fftconv_monarch.cu' else ''
    print(f"{c/tot:6.1%} {byw[(f,ln)]/stot:6.1%}st {f}:{ln} {s}")
