// Ferry's GSS-API binding: exactly what RFC 1961 needs (establish a Kerberos context as client
// or acceptor, wrap/unwrap with and without confidentiality, the wrap size limit, the names).
// Context establishment (which may ask the KDC for a ticket) and the stream's wrap/unwrap run in
// libuv's thread pool and return promises, so the event loop never waits on Kerberos. A context's
// GSS calls are serialised by its mutex: MIT contexts are not safe to use from two threads at once.
// The stream calls wrap and unwrap in place, in the caller's Buffers. With the AES enctypes the
// per-message tokens are sealed by cfx.cc with OpenSSL (no lock shared by the two directions);
// otherwise, or with FERRY_GSSAPI_SEALING=gss_wrap, by gss_wrap_iov/gss_unwrap_iov.
#include <napi.h>

#include <gssapi/gssapi.h>
#include <gssapi/gssapi_ext.h>
#include <gssapi/gssapi_krb5.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cfx.h"

namespace {

// gss_display_status in a loop, for the major code and (with the krb5 mechanism) the minor code.
std::string StatusText(OM_uint32 code, int type) {
  std::string out;
  OM_uint32 ctx = 0;
  do {
    OM_uint32 minor = 0;
    gss_buffer_desc buf = GSS_C_EMPTY_BUFFER;
    OM_uint32 major =
        gss_display_status(&minor, code, type, type == GSS_C_MECH_CODE ? gss_mech_krb5 : GSS_C_NO_OID,
                           &ctx, &buf);
    if (GSS_ERROR(major)) break;
    if (!out.empty()) out += "; ";
    out.append(static_cast<const char*>(buf.value), buf.length);
    gss_release_buffer(&minor, &buf);
  } while (ctx != 0);
  return out;
}

// The message for a failed call. MIT keeps the detail of a minor code in thread-local storage,
// so this must run on the thread that made the call.
std::string GssMessage(const char* call, OM_uint32 major, OM_uint32 minor) {
  std::string msg = std::string(call) + ": " + StatusText(major, GSS_C_GSS_CODE);
  if (minor != 0) {
    std::string m = StatusText(minor, GSS_C_MECH_CODE);
    // A damaged AP-REQ comes back as GSS_S_FAILURE with a minor code that reads "Success": no
    // detail at all, and a misleading one in a log line, so the major code's text stands alone.
    if (m == "Success") m.clear();
    // "Unspecified GSS failure. Minor code may provide more information" adds nothing.
    if (!m.empty()) msg = GSS_ROUTINE_ERROR(major) == GSS_S_FAILURE ? std::string(call) + ": " + m : msg + " (" + m + ")";
  }
  return msg;
}

Napi::Error ErrorWith(Napi::Env env, const std::string& msg, const char* call, OM_uint32 major, OM_uint32 minor) {
  Napi::Error err = Napi::Error::New(env, msg);
  err.Set("major", Napi::Number::New(env, major));
  err.Set("minor", Napi::Number::New(env, minor));
  err.Set("call", Napi::String::New(env, call));
  return err;
}

Napi::Error GssError(Napi::Env env, const char* call, OM_uint32 major, OM_uint32 minor) {
  return ErrorWith(env, GssMessage(call, major, minor), call, major, minor);
}

std::string NameText(gss_name_t name) {
  if (name == GSS_C_NO_NAME) return "";
  OM_uint32 minor = 0;
  gss_buffer_desc buf = GSS_C_EMPTY_BUFFER;
  if (GSS_ERROR(gss_display_name(&minor, name, &buf, nullptr))) return "";
  std::string s(static_cast<const char*>(buf.value), buf.length);
  gss_release_buffer(&minor, &buf);
  return s;
}

Napi::Buffer<uint8_t> ToBuffer(Napi::Env env, gss_buffer_desc* buf) {
  auto out = Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t*>(buf->value), buf->length);
  OM_uint32 minor = 0;
  gss_release_buffer(&minor, buf);
  return out;
}

// An acceptor credential read from a keytab (gss_acquire_cred_from, MIT 1.11+): the keytab is
// named per credential, so no process-wide KRB5_KTNAME is needed and two servers can differ.
class Credential : public Napi::ObjectWrap<Credential> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Credential", {});
  }

  Credential(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Credential>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) {
      Napi::TypeError::New(env, "Credential(keytab: string, principal?: string)").ThrowAsJavaScriptException();
      return;
    }
    std::string keytab = info[0].As<Napi::String>();
    OM_uint32 major, minor = 0;
    gss_name_t name = GSS_C_NO_NAME;
    if (info.Length() > 1 && info[1].IsString()) {
      std::string principal = info[1].As<Napi::String>();
      gss_buffer_desc nb = {principal.size(), const_cast<char*>(principal.data())};
      major = gss_import_name(&minor, &nb, GSS_KRB5_NT_PRINCIPAL_NAME, &name);
      if (GSS_ERROR(major)) {
        GssError(env, "gss_import_name", major, minor).ThrowAsJavaScriptException();
        return;
      }
    }
    gss_key_value_element_desc element = {"keytab", keytab.c_str()};
    gss_key_value_set_desc store = {1, &element};
    gss_OID_set_desc mechs = {1, const_cast<gss_OID>(gss_mech_krb5)};
    major = gss_acquire_cred_from(&minor, name, GSS_C_INDEFINITE, &mechs, GSS_C_ACCEPT, &store, &cred_,
                                  nullptr, nullptr);
    OM_uint32 ignored;
    if (name != GSS_C_NO_NAME) gss_release_name(&ignored, &name);
    if (GSS_ERROR(major)) {
      GssError(env, "gss_acquire_cred_from", major, minor).ThrowAsJavaScriptException();
      return;
    }
  }

  ~Credential() override {
    OM_uint32 minor;
    if (cred_ != GSS_C_NO_CREDENTIAL) gss_release_cred(&minor, &cred_);
  }

  gss_cred_id_t cred() const { return cred_; }

 private:
  gss_cred_id_t cred_ = GSS_C_NO_CREDENTIAL;
};

Napi::FunctionReference* credentialCtor = nullptr;

// What a GSS call on a worker thread left behind, turned into a JS error on the main thread.
struct Failure {
  const char* call = nullptr;  // null: no failure
  OM_uint32 major = 0;
  OM_uint32 minor = 0;
  std::string text;

  Napi::Error ToError(Napi::Env env) const { return ErrorWith(env, text, call, major, minor); }
};

// A failed GSS call, its message made now, on this thread.
Failure Fail(const char* call, OM_uint32 major, OM_uint32 minor) {
  return {call, major, minor, GssMessage(call, major, minor)};
}

// A refusal of Ferry's own.
Failure Refuse(const char* call, const std::string& why) {
  return {call, 0, 0, std::string(call) + ": " + why};
}

// A stream and its datagrams must see the agreed level in every token (RFC 1961 section 5):
// encrypted at confidentiality, integrity-only at integrity.
const char* LevelMismatch(bool wantConf, int confState) {
  if (wantConf && !confState) return "a token arrived without the agreed confidentiality";
  if (!wantConf && confState) return "a token arrived encrypted, but integrity (no encryption) was agreed";
  return nullptr;
}

// Supplementary status bits that refuse a token: a stream must see every token once, in order;
// datagrams may be lost or reordered, but a replayed one is still refused.
OM_uint32 RefusedBits(bool inOrder) {
  return inOrder ? (GSS_S_DUPLICATE_TOKEN | GSS_S_OLD_TOKEN | GSS_S_UNSEQ_TOKEN | GSS_S_GAP_TOKEN)
                 : GSS_S_DUPLICATE_TOKEN;
}

// RFC 1961 data message header: VER 1, MTYP 3 (data), LEN (16 bits, big-endian).
constexpr size_t kFrameHeader = 4;
constexpr size_t kMaxToken = 0xffff;

// A Buffer's bytes: plaintext to wrap (several read as one run), a frame's room, frames to unwrap.
struct Segment {
  uint8_t* data;
  size_t length;
};

// A Buffer, or an array of Buffers, as segments; false when anything else is in it.
bool ToSegments(Napi::Value v, std::vector<Segment>* out) {
  if (v.IsBuffer()) {
    auto b = v.As<Napi::Buffer<uint8_t>>();
    out->push_back({b.Data(), b.Length()});
    return true;
  }
  if (!v.IsArray()) return false;
  Napi::Array list = v.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value item = list.Get(i);
    if (!item.IsBuffer()) return false;
    auto b = item.As<Napi::Buffer<uint8_t>>();
    out->push_back({b.Data(), b.Length()});
  }
  return true;
}

Napi::Array NumberArray(Napi::Env env, const std::vector<uint32_t>& xs) {
  Napi::Array a = Napi::Array::New(env, xs.size());
  for (size_t i = 0; i < xs.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, xs[i]));
  return a;
}

// A position in a run of Buffers read as one run of bytes.
class RunCursor {
 public:
  explicit RunCursor(const std::vector<Segment>& run) : run_(&run) { Settle(); }

  bool AtEnd() const { return seg_ == run_->size(); }

  // The next n bytes as one pointer when they lie in one Buffer; else null.
  uint8_t* Contiguous(size_t n) const {
    if (AtEnd() || (*run_)[seg_].length - off_ < n) return nullptr;
    return (*run_)[seg_].data + off_;
  }

  // Copies the next n bytes out without moving; false when the run is shorter.
  bool Peek(uint8_t* dst, size_t n) const {
    RunCursor c = *this;
    return c.Move(n, [&](uint8_t* p, size_t k) {
      memcpy(dst, p, k);
      dst += k;
    });
  }

  bool Read(uint8_t* dst, size_t n) { return Peek(dst, n) && Skip(n); }
  bool Skip(size_t n) {
    return Move(n, [](uint8_t*, size_t) {});
  }

  // Writes src over the next n bytes (without moving).
  void Write(const uint8_t* src, size_t n) const {
    RunCursor c = *this;
    c.Move(n, [&](uint8_t* p, size_t k) {
      memcpy(p, src, k);
      src += k;
    });
  }

  // The next n bytes as (index, offset, length) pieces, one per Buffer they touch.
  void Spans(size_t n, std::vector<uint32_t>* spans) const {
    RunCursor c = *this;
    c.Move(n, [&](uint8_t* p, size_t k) {
      const Segment& s = (*run_)[c.seg_];
      spans->push_back(static_cast<uint32_t>(c.seg_));
      spans->push_back(static_cast<uint32_t>(p - s.data));
      spans->push_back(static_cast<uint32_t>(k));
    });
  }

 private:
  // Steps over n bytes, handing each Buffer's share to `visit` before leaving it.
  template <typename Visit>
  bool Move(size_t n, Visit visit) {
    while (n > 0) {
      if (AtEnd()) return false;
      const Segment& s = (*run_)[seg_];
      size_t k = s.length - off_ < n ? s.length - off_ : n;
      visit(s.data + off_, k);
      off_ += k;
      n -= k;
      Settle();
    }
    return true;
  }

  // Past the end of a Buffer (or an empty one) means the start of the next.
  void Settle() {
    while (seg_ < run_->size() && off_ == (*run_)[seg_].length) {
      seg_++;
      off_ = 0;
    }
  }

  const std::vector<Segment>* run_;
  size_t seg_ = 0;
  size_t off_ = 0;
};

class Context;

// Base of the thread-pool jobs: keeps the Context object and the Buffers it reads or writes
// alive while the job runs, and settles a promise on the main thread.
class Job : public Napi::AsyncWorker {
 public:
  Job(Napi::Env env, Context* ctx, Napi::Object self, const char* name);
  Napi::Promise Promise() const { return deferred_.Promise(); }
  void Keep(Napi::Value v) { keep_.push_back(Napi::Persistent(v)); }

 protected:
  void OnOK() override;
  virtual Napi::Value Result(Napi::Env env) = 0;

  Context* ctx_;
  Failure failure_;

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference self_;
  std::vector<Napi::Reference<Napi::Value>> keep_;
};

// One security context. `new Context(target)` initiates (client, target like "rcmd@host" or
// "rcmd/host[@REALM]"); `new Context(credential)` accepts (server).
class Context : public Napi::ObjectWrap<Context> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Context",
                       {
                           InstanceMethod("step", &Context::StepAsync),
                           InstanceMethod("stepSync", &Context::StepSync),
                           InstanceMethod("wrap", &Context::WrapData),
                           InstanceMethod("unwrap", &Context::UnwrapToken),
                           InstanceMethod("wrapFrames", &Context::WrapFrames),
                           InstanceMethod("unwrapFrames", &Context::UnwrapFrames),
                           InstanceMethod("wrapSizeLimit", &Context::WrapSizeLimit),
                           InstanceMethod("dispose", &Context::Dispose),
                           InstanceAccessor("complete", &Context::Complete, nullptr),
                           InstanceAccessor("peerName", &Context::PeerName, nullptr),
                           InstanceAccessor("localName", &Context::LocalName, nullptr),
                           InstanceAccessor("flags", &Context::Flags, nullptr),
                           InstanceAccessor("sealing", &Context::Sealing, nullptr),
                       });
  }

  Context(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Context>(info) {
    Napi::Env env = info.Env();
    // The way back to MIT's own per-message code, for comparison and for a suspected fault: an
    // options object { sealing: "gss_wrap" } after the other arguments, or the environment.
    const char* sealing = getenv("FERRY_GSSAPI_SEALING");
    std::string choice = sealing ? sealing : "";
    for (size_t i = 1; i < info.Length(); i++) {
      if (!info[i].IsObject() || info[i].IsBuffer()) continue;
      Napi::Value v = info[i].As<Napi::Object>().Get("sealing");
      if (v.IsString()) choice = v.As<Napi::String>();
    }
    if (!choice.empty() && choice != "gss_wrap" && choice != "auto") {
      Napi::TypeError::New(env, "sealing must be \"auto\" or \"gss_wrap\"").ThrowAsJavaScriptException();
      return;
    }
    ownSealing_ = choice != "gss_wrap";
    if (info.Length() >= 1 && info[0].IsString()) {
      initiator_ = true;
      std::string target = info[0].As<Napi::String>();
      // "service@host" is a host-based service name; anything with a slash is a principal.
      bool hostbased = target.find('/') == std::string::npos;
      gss_buffer_desc nb = {target.size(), const_cast<char*>(target.data())};
      OM_uint32 minor = 0;
      OM_uint32 major = gss_import_name(&minor, &nb,
                                        hostbased ? GSS_C_NT_HOSTBASED_SERVICE : GSS_KRB5_NT_PRINCIPAL_NAME,
                                        &target_);
      if (GSS_ERROR(major)) {
        GssError(env, "gss_import_name", major, minor).ThrowAsJavaScriptException();
        return;
      }
      // An explicit credential cache; otherwise the default one (KRB5CCNAME). Reading the cache
      // is local: the KDC is asked later, by the first step.
      if (info.Length() >= 2 && info[1].IsString()) {
        std::string ccache = info[1].As<Napi::String>();
        gss_key_value_element_desc element = {"ccache", ccache.c_str()};
        gss_key_value_set_desc store = {1, &element};
        gss_OID_set_desc mechs = {1, const_cast<gss_OID>(gss_mech_krb5)};
        major = gss_acquire_cred_from(&minor, GSS_C_NO_NAME, GSS_C_INDEFINITE, &mechs, GSS_C_INITIATE, &store,
                                      &cred_, nullptr, nullptr);
        if (GSS_ERROR(major)) {
          GssError(env, "gss_acquire_cred_from", major, minor).ThrowAsJavaScriptException();
          return;
        }
        ownsCred_ = true;
      }
      return;
    }
    if (info.Length() >= 1 && info[0].IsObject() && credentialCtor &&
        info[0].As<Napi::Object>().InstanceOf(credentialCtor->Value())) {
      credRef_ = Napi::Persistent(info[0].As<Napi::Object>());
      cred_ = Credential::Unwrap(info[0].As<Napi::Object>())->cred();
      return;
    }
    Napi::TypeError::New(env, "Context(target: string, ccache?: string) or Context(credential: Credential)")
        .ThrowAsJavaScriptException();
  }

  ~Context() override { Release(); }

  // --- called by jobs, on a worker thread; MIT's calls take mu_ (DoStep: the caller holds it) ---

  Failure DoStep(const gss_buffer_desc& input, gss_buffer_desc* output, bool* complete) {
    Failure f;
    OM_uint32 major, minor = 0;
    gss_buffer_desc in = input;
    if (initiator_) {
      major = gss_init_sec_context(
          &minor, cred_, &ctx_, target_, const_cast<gss_OID>(gss_mech_krb5),
          GSS_C_MUTUAL_FLAG | GSS_C_REPLAY_FLAG | GSS_C_SEQUENCE_FLAG | GSS_C_INTEG_FLAG | GSS_C_CONF_FLAG,
          GSS_C_INDEFINITE, GSS_C_NO_CHANNEL_BINDINGS, in.length ? &in : GSS_C_NO_BUFFER, nullptr, output,
          &flags_, nullptr);
    } else {
      major = gss_accept_sec_context(&minor, &ctx_, cred_, &in, GSS_C_NO_CHANNEL_BINDINGS, &peer_, nullptr,
                                     output, &flags_, nullptr, nullptr);
    }
    if (GSS_ERROR(major)) {
      OM_uint32 ignored;
      gss_release_buffer(&ignored, output);
      return Fail(initiator_ ? "gss_init_sec_context" : "gss_accept_sec_context", major, minor);
    }
    *complete = !(major & GSS_S_CONTINUE_NEEDED);
    if (*complete && ownSealing_) TakeOverSealing();
    return f;
  }

  // With an AES enctype, seal and open tokens ourselves from here on, with the context's keys and
  // sequence numbers (its lucid export, which unlike gss_krb5_export_lucid_sec_context leaves the
  // context usable). Anything else stays with gss_wrap/gss_unwrap.
  void TakeOverSealing() {
    static const uint8_t kLucidV1[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02, 0x05, 0x06, 0x01};
    gss_OID_desc oid = {sizeof kLucidV1, const_cast<uint8_t*>(kLucidV1)};
    gss_buffer_set_t set = GSS_C_NO_BUFFER_SET;
    OM_uint32 minor = 0;
    OM_uint32 major = gss_inquire_sec_context_by_oid(&minor, ctx_, &oid, &set);
    if (GSS_ERROR(major) || set == GSS_C_NO_BUFFER_SET) return;
    if (set->count == 1 && set->elements[0].length == sizeof(void*)) {
      void* lucid = *static_cast<void**>(set->elements[0].value);
      std::string why;
      cfx_ = ferry::Cfx::FromLucid(lucid, &why);
      gss_krb5_free_lucid_sec_context(&minor, lucid);
    }
    gss_release_buffer_set(&minor, &set);
  }

  // Cuts `in` into pieces of at most maxChunk bytes and writes piece i as one RFC 1961 data
  // message (header, then a gss_wrap-compatible token built in place) into outs[i]; `used` gets
  // each message's length.
  Failure DoWrapFrames(const std::vector<Segment>& in, const std::vector<Segment>& outs, size_t maxChunk, bool conf,
                       std::vector<uint32_t>* used) {
    size_t inLen = 0;
    for (const Segment& s : in) inLen += s.length;
    RunCursor from(in);
    size_t piece = 0;
    for (size_t at = 0; at < inLen; at += maxChunk, piece++) {
      size_t n = inLen - at < maxChunk ? inLen - at : maxChunk;
      Layout layout;
      Failure f = Plan(n, conf, &layout);
      if (f.call) return f;
      if (layout.token > kMaxToken) return Refuse("gss_wrap", "a wrapped piece exceeds 65535 bytes");
      if (piece >= outs.size() || kFrameHeader + layout.token > outs[piece].length)
        return Refuse("gss_wrap", "the output buffers are too few or too small");
      uint8_t* frame = outs[piece].data;
      frame[0] = 0x01;
      frame[1] = 0x03;
      frame[2] = static_cast<uint8_t>(layout.token >> 8);
      frame[3] = static_cast<uint8_t>(layout.token & 0xff);
      uint8_t* tok = frame + kFrameHeader;
      // The one copy: the plaintext goes into its place in the token, where it is sealed.
      from.Read(tok + layout.header, n);
      f = SealInPlace(tok, n, conf, layout);
      if (f.call) return f;
      used->push_back(static_cast<uint32_t>(kFrameHeader + layout.token));
    }
    return {};
  }

  // Unwraps in place the whole RFC 1961 data messages that `run` holds back to back; `spans`
  // gets each plaintext as (index in the run, offset, length) pieces. A message that spans two
  // Buffers (most do: a socket read is 64 KiB, a message up to 64 KiB + 4) is opened in scratch
  // memory and its plaintext written back where it came from: two copies in warm cache instead
  // of a fresh Buffer to join it in.
  Failure DoUnwrapFrames(const std::vector<Segment>& run, bool conf, std::vector<uint32_t>* spans) {
    RunCursor at(run);
    while (!at.AtEnd()) {
      uint8_t header[kFrameHeader];
      if (!at.Read(header, kFrameHeader) || header[0] != 0x01 || header[1] != 0x03)
        return Refuse("gss_unwrap", "not a whole GSSAPI data message");
      size_t token = (static_cast<size_t>(header[2]) << 8) | header[3];
      size_t plainAt = 0, n = 0;
      uint8_t* tok = at.Contiguous(token);
      const bool split = tok == nullptr;
      if (split) {
        scratch_.resize(token);
        if (!at.Peek(scratch_.data(), token)) return Refuse("gss_unwrap", "not a whole GSSAPI data message");
        tok = scratch_.data();
      }
      Failure f = OpenInPlace(tok, token, conf, &plainAt, &n);
      if (f.call) return f;
      RunCursor plain = at;
      plain.Skip(plainAt);
      if (split) plain.Write(tok + plainAt, n);
      plain.Spans(n, spans);
      at.Skip(token);
    }
    return {};
  }

  // Where a piece's plaintext goes in its token, and the token's parts (gss_wrap_iov's header,
  // padding and trailer; with our own sealing, one header and one trailer).
  struct Layout {
    size_t header = 0, padding = 0, trailer = 0, token = 0;
  };

  Failure Plan(size_t n, bool conf, Layout* l) {
    if (cfx_) {
      l->header = ferry::Cfx::DataOffset(conf);
      l->token = n + cfx_->Overhead(conf);
      l->trailer = l->token - l->header - n;
      return {};
    }
    gss_iov_buffer_desc iov[4] = {};
    iov[0].type = GSS_IOV_BUFFER_TYPE_HEADER;
    iov[1].type = GSS_IOV_BUFFER_TYPE_DATA;
    iov[1].buffer.length = n;
    iov[2].type = GSS_IOV_BUFFER_TYPE_PADDING;
    iov[3].type = GSS_IOV_BUFFER_TYPE_TRAILER;
    int confState = 0;
    OM_uint32 minor = 0;
    std::lock_guard<std::mutex> lock(mu_);
    OM_uint32 major = gss_wrap_iov_length(&minor, ctx_, conf, GSS_C_QOP_DEFAULT, &confState, iov, 4);
    if (GSS_ERROR(major)) return Fail("gss_wrap_iov_length", major, minor);
    l->header = iov[0].buffer.length;
    l->padding = iov[2].buffer.length;
    l->trailer = iov[3].buffer.length;
    l->token = l->header + n + l->padding + l->trailer;
    return {};
  }

  // Seals the n bytes at tok + layout.header into the token laid out by Plan.
  Failure SealInPlace(uint8_t* tok, size_t n, bool conf, const Layout& layout) {
    if (cfx_) {
      std::string why;
      if (!cfx_->Seal(tok, n, conf, &why)) return Refuse("gss_wrap", why);
      return {};
    }
    gss_iov_buffer_desc iov[4] = {};
    iov[0].type = GSS_IOV_BUFFER_TYPE_HEADER;
    iov[0].buffer = {layout.header, tok};
    iov[1].type = GSS_IOV_BUFFER_TYPE_DATA;
    iov[1].buffer = {n, tok + layout.header};
    iov[2].type = GSS_IOV_BUFFER_TYPE_PADDING;
    iov[2].buffer = {layout.padding, tok + layout.header + n};
    iov[3].type = GSS_IOV_BUFFER_TYPE_TRAILER;
    iov[3].buffer = {layout.trailer, tok + layout.header + n + layout.padding};
    int confState = 0;
    OM_uint32 minor = 0;
    std::lock_guard<std::mutex> lock(mu_);
    OM_uint32 major = gss_wrap_iov(&minor, ctx_, conf, GSS_C_QOP_DEFAULT, &confState, iov, 4);
    if (GSS_ERROR(major)) return Fail("gss_wrap_iov", major, minor);
    if (conf && !confState) return Refuse("gss_wrap", "confidentiality was requested but the mechanism did not apply it");
    return {};
  }

  // Opens one stream token in place, in order and at the agreed level; the plaintext is then at
  // tok + *at, *n bytes.
  Failure OpenInPlace(uint8_t* tok, size_t token, bool conf, size_t* at, size_t* n) {
    bool confState = false;
    if (cfx_) {
      std::string why;
      if (!cfx_->Open(tok, token, ferry::Cfx::Order::Stream, &confState, at, n, &why))
        return Refuse("gss_unwrap", why);
    } else {
      gss_iov_buffer_desc iov[2] = {};
      iov[0].type = GSS_IOV_BUFFER_TYPE_STREAM;
      iov[0].buffer = {token, tok};
      iov[1].type = GSS_IOV_BUFFER_TYPE_DATA;
      int state = 0;
      OM_uint32 minor = 0;
      std::lock_guard<std::mutex> lock(mu_);
      OM_uint32 major = gss_unwrap_iov(&minor, ctx_, &state, nullptr, iov, 2);
      if (GSS_ERROR(major)) return Fail("gss_unwrap", major, minor);
      if (major & RefusedBits(true)) {
        ReleaseIov(&iov[1]);
        return Fail("gss_unwrap", major, 0);
      }
      confState = state != 0;
      uint8_t* data = static_cast<uint8_t*>(iov[1].buffer.value);
      *n = iov[1].buffer.length;
      if (GSS_IOV_BUFFER_FLAGS(iov[1].type) & GSS_IOV_BUFFER_FLAG_ALLOCATED) {
        // The mechanism did not decrypt in place: the plaintext is shorter than the token.
        memcpy(tok, data, *n);
        ReleaseIov(&iov[1]);
        data = tok;
      }
      *at = static_cast<size_t>(data - tok);
    }
    if (const char* why = LevelMismatch(conf, confState)) return Refuse("gss_unwrap", why);
    return {};
  }

  std::mutex mu_;
  // Where a message that spans Buffers is opened: the stream's unwraps run one at a time.
  std::vector<uint8_t> scratch_;

  // --- main thread: a job starts and ends ---

  bool BeginJob(Napi::Env env) {
    if (disposed_) {
      Napi::Error::New(env, "the GSS-API security context was disposed").ThrowAsJavaScriptException();
      return false;
    }
    pending_++;
    return true;
  }

  void EndJob() {
    if (--pending_ == 0 && disposed_) Release();
  }

  void StepDone(bool complete) {
    stepping_ = false;
    if (complete) complete_ = true;
  }

 private:
  static void ReleaseIov(gss_iov_buffer_desc* b) {
    if (GSS_IOV_BUFFER_FLAGS(b->type) & GSS_IOV_BUFFER_FLAG_ALLOCATED) {
      OM_uint32 ignored;
      gss_release_buffer(&ignored, &b->buffer);
      b->type &= ~GSS_IOV_BUFFER_FLAG_ALLOCATED;
    }
  }

  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    OM_uint32 minor;
    cfx_.reset();
    if (ctx_ != GSS_C_NO_CONTEXT) gss_delete_sec_context(&minor, &ctx_, GSS_C_NO_BUFFER);
    if (target_ != GSS_C_NO_NAME) gss_release_name(&minor, &target_);
    if (peer_ != GSS_C_NO_NAME) gss_release_name(&minor, &peer_);
    if (ownsCred_ && cred_ != GSS_C_NO_CREDENTIAL) gss_release_cred(&minor, &cred_);
  }

  bool NeedContext(Napi::Env env) {
    if (disposed_ || ctx_ == GSS_C_NO_CONTEXT || !complete_) {
      Napi::Error::New(env, "the GSS-API security context is not established").ThrowAsJavaScriptException();
      return false;
    }
    return true;
  }

  bool CanStep(Napi::Env env) {
    if (complete_) {
      Napi::Error::New(env, "the GSS-API security context is already established").ThrowAsJavaScriptException();
      return false;
    }
    if (stepping_) {
      Napi::Error::New(env, "a GSS-API context step is already running").ThrowAsJavaScriptException();
      return false;
    }
    return true;
  }

  static gss_buffer_desc InputToken(const Napi::CallbackInfo& info) {
    gss_buffer_desc input = GSS_C_EMPTY_BUFFER;
    if (info.Length() >= 1 && info[0].IsBuffer()) {
      auto b = info[0].As<Napi::Buffer<uint8_t>>();
      input.length = b.Length();
      input.value = b.Data();
    }
    return input;
  }

  Napi::Value StepAsync(const Napi::CallbackInfo& info);
  Napi::Value WrapFrames(const Napi::CallbackInfo& info);
  Napi::Value UnwrapFrames(const Napi::CallbackInfo& info);

  // The caller may ask for a small batch on its own thread (argument `at` true): a thread-pool
  // round trip (tens of microseconds here) costs more than sealing a few KiB with OpenSSL, and a
  // peer that sends small tokens would pay one per token. MIT's code always goes to the pool,
  // where its lock may wait for the other direction.
  bool RunsInline(const Napi::CallbackInfo& info, size_t at) const {
    return cfx_ && info.Length() > at && info[at].IsBoolean() && info[at].As<Napi::Boolean>().Value();
  }

  // An inline call's answer: a promise settled already, like the pool's.
  static Napi::Value Settled(Napi::Env env, const Failure& f, const std::vector<uint32_t>& xs) {
    auto deferred = Napi::Promise::Deferred::New(env);
    if (f.call) deferred.Reject(f.ToError(env).Value());
    else deferred.Resolve(NumberArray(env, xs));
    return deferred.Promise();
  }

  // The same step, on the calling thread: for tests and tools that make tokens in a loop. It
  // blocks while the KDC answers; Ferry's own code uses step().
  Napi::Value StepSync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!CanStep(env) || !BeginJob(env)) return env.Undefined();
    gss_buffer_desc output = GSS_C_EMPTY_BUFFER;
    bool complete = false;
    Failure f;
    {
      std::lock_guard<std::mutex> lock(mu_);
      f = DoStep(InputToken(info), &output, &complete);
    }
    Napi::Value result = env.Undefined();
    if (f.call) {
      f.ToError(env).ThrowAsJavaScriptException();
    } else {
      complete_ = complete;
      result = ToBuffer(env, &output);
    }
    EndJob();
    return result;
  }

  // Small messages (the protection-level octet, datagrams) are wrapped on the calling thread.
  Napi::Value WrapData(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!NeedContext(env)) return env.Undefined();
    if (info.Length() < 2 || !info[0].IsBuffer() || !info[1].IsBoolean()) {
      Napi::TypeError::New(env, "wrap(data: Buffer, confidential: boolean)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto b = info[0].As<Napi::Buffer<uint8_t>>();
    bool conf = info[1].As<Napi::Boolean>();
    if (cfx_) {
      if (b.Length() > kMaxToken) {
        Napi::RangeError::New(env, "gss_wrap: the message exceeds 65535 bytes").ThrowAsJavaScriptException();
        return env.Undefined();
      }
      size_t at = ferry::Cfx::DataOffset(conf);
      auto out = Napi::Buffer<uint8_t>::New(env, b.Length() + cfx_->Overhead(conf));
      memcpy(out.Data() + at, b.Data(), b.Length());
      std::string why;
      if (!cfx_->Seal(out.Data(), b.Length(), conf, &why)) {
        Napi::Error::New(env, "gss_wrap: " + why).ThrowAsJavaScriptException();
        return env.Undefined();
      }
      return out;
    }
    gss_buffer_desc in = {b.Length(), b.Data()};
    gss_buffer_desc out = GSS_C_EMPTY_BUFFER;
    int confState = 0;
    OM_uint32 minor = 0;
    OM_uint32 major;
    {
      std::lock_guard<std::mutex> lock(mu_);
      major = gss_wrap(&minor, ctx_, conf ? 1 : 0, GSS_C_QOP_DEFAULT, &in, &confState, &out);
    }
    if (GSS_ERROR(major)) {
      GssError(env, "gss_wrap", major, minor).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (conf && !confState) {
      OM_uint32 ignored;
      gss_release_buffer(&ignored, &out);
      Napi::Error::New(env, "gss_wrap: confidentiality was requested but the mechanism did not apply it")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    return ToBuffer(env, &out);
  }

  // unwrap(token, inOrder = true) returns { data, confidential }.
  Napi::Value UnwrapToken(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!NeedContext(env)) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsBuffer()) {
      Napi::TypeError::New(env, "unwrap(token: Buffer)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    bool strictOrder = !(info.Length() >= 2 && info[1].IsBoolean() && !info[1].As<Napi::Boolean>().Value());
    auto b = info[0].As<Napi::Buffer<uint8_t>>();
    if (cfx_) {
      // Opened in a copy: the caller's Buffer stays as it was.
      std::vector<uint8_t> tok(b.Data(), b.Data() + b.Length());
      bool confidential = false;
      size_t at = 0, n = 0;
      std::string why;
      auto order = strictOrder ? ferry::Cfx::Order::Stream : ferry::Cfx::Order::Datagram;
      if (!cfx_->Open(tok.data(), tok.size(), order, &confidential, &at, &n, &why)) {
        Napi::Error::New(env, "gss_unwrap: " + why).ThrowAsJavaScriptException();
        return env.Undefined();
      }
      Napi::Object result = Napi::Object::New(env);
      result.Set("data", Napi::Buffer<uint8_t>::Copy(env, tok.data() + at, n));
      result.Set("confidential", Napi::Boolean::New(env, confidential));
      return result;
    }
    gss_buffer_desc in = {b.Length(), b.Data()};
    gss_buffer_desc out = GSS_C_EMPTY_BUFFER;
    int confState = 0;
    OM_uint32 minor = 0;
    OM_uint32 major;
    {
      std::lock_guard<std::mutex> lock(mu_);
      major = gss_unwrap(&minor, ctx_, &in, &out, &confState, nullptr);
    }
    if (GSS_ERROR(major)) {
      GssError(env, "gss_unwrap", major, minor).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (major & RefusedBits(strictOrder)) {
      OM_uint32 ignored;
      gss_release_buffer(&ignored, &out);
      GssError(env, "gss_unwrap", major, 0).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("data", ToBuffer(env, &out));
    result.Set("confidential", Napi::Boolean::New(env, confState != 0));
    return result;
  }

  Napi::Value WrapSizeLimit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!NeedContext(env)) return env.Undefined();
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsBoolean()) {
      Napi::TypeError::New(env, "wrapSizeLimit(maxToken: number, confidential: boolean)")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    OM_uint32 maxToken = info[0].As<Napi::Number>().Uint32Value();
    bool conf = info[1].As<Napi::Boolean>();
    if (cfx_) {
      size_t overhead = cfx_->Overhead(conf);
      return Napi::Number::New(env, maxToken > overhead ? static_cast<double>(maxToken - overhead) : 0);
    }
    OM_uint32 maxInput = 0, minor = 0;
    OM_uint32 major;
    {
      std::lock_guard<std::mutex> lock(mu_);
      major = gss_wrap_size_limit(&minor, ctx_, conf ? 1 : 0, GSS_C_QOP_DEFAULT, maxToken, &maxInput);
    }
    if (GSS_ERROR(major)) {
      GssError(env, "gss_wrap_size_limit", major, minor).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    return Napi::Number::New(env, maxInput);
  }

  // Releases now, or when the last running job ends: a worker may be inside a GSS call.
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (!disposed_) {
      disposed_ = true;
      if (pending_ == 0) Release();
    }
    return info.Env().Undefined();
  }

  Napi::Value Complete(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), complete_ && !disposed_);
  }

  // The other side: the client principal for an acceptor, the service for an initiator.
  Napi::Value PeerName(const Napi::CallbackInfo& info) {
    return Names(info, initiator_ ? 1 : 0);
  }

  Napi::Value LocalName(const Napi::CallbackInfo& info) {
    return Names(info, initiator_ ? 0 : 1);
  }

  // which: 0 = source (initiator) name, 1 = target (acceptor) name, as the context reports them.
  Napi::Value Names(const Napi::CallbackInfo& info, int which) {
    Napi::Env env = info.Env();
    if (disposed_ || ctx_ == GSS_C_NO_CONTEXT || !complete_) return env.Undefined();
    gss_name_t src = GSS_C_NO_NAME, targ = GSS_C_NO_NAME;
    OM_uint32 minor = 0;
    OM_uint32 major;
    std::string s;
    {
      std::lock_guard<std::mutex> lock(mu_);
      major = gss_inquire_context(&minor, ctx_, &src, &targ, nullptr, nullptr, nullptr, nullptr, nullptr);
      if (!GSS_ERROR(major)) {
        s = NameText(which == 0 ? src : targ);
        gss_release_name(&minor, &src);
        gss_release_name(&minor, &targ);
      }
    }
    if (GSS_ERROR(major)) {
      GssError(env, "gss_inquire_context", major, minor).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    return Napi::String::New(env, s);
  }

  Napi::Value Flags(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("mutual", Napi::Boolean::New(env, (flags_ & GSS_C_MUTUAL_FLAG) != 0));
    o.Set("integrity", Napi::Boolean::New(env, (flags_ & GSS_C_INTEG_FLAG) != 0));
    o.Set("confidentiality", Napi::Boolean::New(env, (flags_ & GSS_C_CONF_FLAG) != 0));
    o.Set("replay", Napi::Boolean::New(env, (flags_ & GSS_C_REPLAY_FLAG) != 0));
    o.Set("sequence", Napi::Boolean::New(env, (flags_ & GSS_C_SEQUENCE_FLAG) != 0));
    return o;
  }

  // How tokens are sealed: "openssl" (cfx.cc, with the AES enctypes) or "gss_wrap" (MIT's own).
  Napi::Value Sealing(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), cfx_ ? "openssl" : "gss_wrap");
  }

  bool initiator_ = false;
  bool ownSealing_ = true;
  std::unique_ptr<ferry::Cfx> cfx_;
  bool ownsCred_ = false;
  bool complete_ = false;
  bool stepping_ = false;
  bool disposed_ = false;
  int pending_ = 0;
  gss_ctx_id_t ctx_ = GSS_C_NO_CONTEXT;
  gss_name_t target_ = GSS_C_NO_NAME;
  gss_name_t peer_ = GSS_C_NO_NAME;
  gss_cred_id_t cred_ = GSS_C_NO_CREDENTIAL;
  Napi::ObjectReference credRef_;
  OM_uint32 flags_ = 0;

};

Job::Job(Napi::Env env, Context* ctx, Napi::Object self, const char* name)
    : Napi::AsyncWorker(env, name), ctx_(ctx), deferred_(Napi::Promise::Deferred::New(env)) {
  self_ = Napi::Persistent(self);
}

void Job::OnOK() {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  if (failure_.call) {
    deferred_.Reject(failure_.ToError(env).Value());
  } else {
    deferred_.Resolve(Result(env));
  }
  ctx_->EndJob();
}

class StepJob : public Job {
 public:
  StepJob(Napi::Env env, Context* ctx, Napi::Object self, gss_buffer_desc input)
      : Job(env, ctx, self, "ferry_gssapi_step"), input_(input) {}
  ~StepJob() override {
    OM_uint32 ignored;
    gss_release_buffer(&ignored, &output_);
  }

 protected:
  void Execute() override {
    std::lock_guard<std::mutex> lock(ctx_->mu_);
    failure_ = ctx_->DoStep(input_, &output_, &complete_);
  }
  Napi::Value Result(Napi::Env env) override {
    return Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t*>(output_.value), output_.length);
  }
  void OnOK() override {
    ctx_->StepDone(!failure_.call && complete_);
    Job::OnOK();
  }

 private:
  gss_buffer_desc input_;
  gss_buffer_desc output_ = GSS_C_EMPTY_BUFFER;
  bool complete_ = false;
};

class WrapFramesJob : public Job {
 public:
  WrapFramesJob(Napi::Env env, Context* ctx, Napi::Object self, std::vector<Segment> in, std::vector<Segment> outs,
                size_t maxChunk, bool conf)
      : Job(env, ctx, self, "ferry_gssapi_wrap"),
        in_(std::move(in)), outs_(std::move(outs)), maxChunk_(maxChunk), conf_(conf) {}

 protected:
  void Execute() override { failure_ = ctx_->DoWrapFrames(in_, outs_, maxChunk_, conf_, &used_); }
  Napi::Value Result(Napi::Env env) override { return NumberArray(env, used_); }

 private:
  std::vector<Segment> in_;
  std::vector<Segment> outs_;
  size_t maxChunk_;
  bool conf_;
  std::vector<uint32_t> used_;
};

class UnwrapFramesJob : public Job {
 public:
  UnwrapFramesJob(Napi::Env env, Context* ctx, Napi::Object self, std::vector<Segment> bufs, bool conf)
      : Job(env, ctx, self, "ferry_gssapi_unwrap"), bufs_(std::move(bufs)), conf_(conf) {}

 protected:
  void Execute() override { failure_ = ctx_->DoUnwrapFrames(bufs_, conf_, &spans_); }
  Napi::Value Result(Napi::Env env) override { return NumberArray(env, spans_); }

 private:
  std::vector<Segment> bufs_;
  bool conf_;
  std::vector<uint32_t> spans_;
};

// step(token?) → Promise<Buffer>: one round of establishment in the thread pool.
Napi::Value Context::StepAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CanStep(env) || !BeginJob(env)) return env.Undefined();
  stepping_ = true;
  auto* job = new StepJob(env, this, info.This().As<Napi::Object>(), InputToken(info));
  if (info.Length() >= 1 && info[0].IsBuffer()) job->Keep(info[0]);
  job->Queue();
  return job->Promise();
}

// wrapFrames(data, outs, maxChunk, confidential) → Promise<number[]>: `data` (a Buffer, or an
// array of Buffers taken as one run of bytes, so queued writes fill whole tokens) cut into pieces
// of at most maxChunk bytes, piece i written as one RFC 1961 data message into outs[i]; resolves
// with each message's length. One Buffer per message keeps each under malloc's mmap threshold
// (fresh mmapped pages cost more to fault in than the crypto). No Buffer may change until the
// promise settles.
Napi::Value Context::WrapFrames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!NeedContext(env)) return env.Undefined();
  std::vector<Segment> segs, outs;
  if (info.Length() < 4 || !ToSegments(info[0], &segs) || !info[1].IsArray() || !ToSegments(info[1], &outs) ||
      !info[2].IsNumber() || !info[3].IsBoolean()) {
    Napi::TypeError::New(
        env, "wrapFrames(data: Buffer | Buffer[], outs: Buffer[], maxChunk: number, confidential: boolean)")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint32_t maxChunk = info[2].As<Napi::Number>().Uint32Value();
  if (maxChunk == 0) {
    Napi::RangeError::New(env, "wrapFrames: maxChunk must be positive").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  bool conf = info[3].As<Napi::Boolean>();
  if (RunsInline(info, 4)) {
    std::vector<uint32_t> used;
    Failure f = DoWrapFrames(segs, outs, maxChunk, conf, &used);
    return Settled(env, f, used);
  }
  if (!BeginJob(env)) return env.Undefined();
  auto* job = new WrapFramesJob(env, this, info.This().As<Napi::Object>(), std::move(segs), std::move(outs),
                                maxChunk, conf);
  job->Keep(info[0]);  // an array holds its Buffers
  job->Keep(info[1]);
  job->Queue();
  return job->Promise();
}

// unwrapFrames(run, confidential) → Promise<number[]>: unwraps in place the whole RFC 1961 data
// messages that `run` (a Buffer, or an array of Buffers read as one run of bytes) holds back to
// back, strictly in order and at the agreed level; resolves with [index, offset, length, ...]:
// the plaintext, in pieces inside run[index] (index 0 for a single Buffer).
Napi::Value Context::UnwrapFrames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!NeedContext(env)) return env.Undefined();
  std::vector<Segment> bufs;
  if (info.Length() < 2 || !ToSegments(info[0], &bufs) || !info[1].IsBoolean()) {
    Napi::TypeError::New(env, "unwrapFrames(frames: Buffer | Buffer[], confidential: boolean)")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  bool conf = info[1].As<Napi::Boolean>();
  if (RunsInline(info, 2)) {
    std::vector<uint32_t> spans;
    Failure f = DoUnwrapFrames(bufs, conf, &spans);
    return Settled(env, f, spans);
  }
  if (!BeginJob(env)) return env.Undefined();
  auto* job = new UnwrapFramesJob(env, this, info.This().As<Napi::Object>(), std::move(bufs), conf);
  job->Keep(info[0]);
  job->Queue();
  return job->Promise();
}

Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  Napi::Function cred = Credential::Init(env);
  credentialCtor = new Napi::FunctionReference(Napi::Persistent(cred));
  exports.Set("Credential", cred);
  exports.Set("Context", Context::Init(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(ferry_gssapi, InitAll)
