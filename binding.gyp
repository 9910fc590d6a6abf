{
  "targets": [
    {
      "target_name": "justgrpo",
      "sources": [
        "native/addon/addon.cpp",
        "native/addon/engine.cpp",
        "native/common/layout.cpp",
        "native/common/tensor_io.cpp",
        "native/cpu/threadpool.cpp",
        "native/cpu/simd.cpp",
        "native/cpu/embedding.cpp",
        "native/cpu/rmsnorm.cpp",
        "native/cpu/matmul.cpp",
        "native/cpu/rope.cpp",
        "native/cpu/attention.cpp",
        "native/cpu/swiglu.cpp",
        "native/cpu/model.cpp"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lopenblas"]
    }
  ]
}
