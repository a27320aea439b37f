{
  "targets": [
    {
      "target_name": "ferry_gssapi",
      "sources": ["gssapi.cc", "cfx.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-Wall", "<!@(krb5-config --cflags gssapi 2>/dev/null || true)"],
      "libraries": ["<!@(krb5-config --libs gssapi 2>/dev/null || echo -lgssapi_krb5)"]
    }
  ]
}
