# Sourced by check.sh and multi.sh: the engine opens NCCL at run time (native/cuda/nccl.cpp):
# JUSTGRPO_NCCL_LIBRARY, else libnccl.so.2 on the loader's path or beside PyTorch. PyTorch's images
# carry it as the pip package nvidia-nccl; this names that file when the engine's own search would
# miss it (a Python outside the usual prefixes). find_spec: where the packages are, without
# importing torch, which takes seconds.
if [ -z "${JUSTGRPO_NCCL_LIBRARY:-}" ]; then
  for f in $(python3 -c '
import importlib.util as u, os
for name, sub in (("nvidia", "nccl/lib"), ("torch", "lib")):
    s = u.find_spec(name)
    for p in (s.submodule_search_locations or []) if s else []:
        print(os.path.join(p, sub, "libnccl.so.2"))' 2>/dev/null); do
    if [ -f "$f" ]; then export JUSTGRPO_NCCL_LIBRARY="$f"; break; fi
  done
fi
