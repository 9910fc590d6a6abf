{
  "variables": {
    "openblas_static%": "<!(node -p \"process.env.JUSTGRPO_OPENBLAS_STATIC === '1' ? 1 : 0\")",
    "onednn%": "<!(node -p \"['/usr/include', '/usr/local/include'].some((d) => require('fs').existsSync(d + '/oneapi/dnnl/dnnl.h')) ? 1 : 0\")"
  },
  "targets": [
    {
      "target_name": "justgrpo",
      "sources": ["<!@(ls -1 native/addon/*.cpp native/common/*.cpp native/cpu/*.cpp)"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      # dlopen: MPI (native/common/comm.cpp) is found at run time, never linked.
      "libraries": ["-ldl"],
      "conditions": [
        # oneDNN's header (libdnnl-dev) gives the bf16 products; the library itself is opened at run
        # time, only when bf16 is asked for (native/cpu/onednn.h), so nothing links against it.
        ["onednn==1", {"defines": ["JUSTGRPO_ONEDNN"], "libraries": ["-ldl"]}],
        # JUSTGRPO_OPENBLAS_STATIC=1 (the prebuilt binary) links libopenblas.a into the .node file and
        # hides its symbols; otherwise the system's shared libopenblas, as any distro provides.
        ["openblas_static==1", {
          "libraries": ["-l:libopenblas.a", "-lm", "-Wl,--exclude-libs,ALL"]
        }, {
          "libraries": ["-lopenblas"]
        }]
      ]
    }
  ]
}
