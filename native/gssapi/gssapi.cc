// Ferry's GSS-API binding: exactly what RFC 1961 needs (establish a Kerberos context as client
// or acceptor, wrap/unwrap with and without confidentiality, the wrap size limit, the names).
// Calls are synchronous: accepting needs only the keytab; initiating asks the KDC for a service
// ticket once per context (a local round trip, cached afterwards in the credential cache).
#include <napi.h>

#include <gssapi/gssapi.h>
#include <gssapi/gssapi_ext.h>
#include <gssapi/gssapi_krb5.h>

#include <string>

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

Napi::Error GssError(Napi::Env env, const char* call, OM_uint32 major, OM_uint32 minor) {
  std::string msg = std::string(call) + ": " + StatusText(major, GSS_C_GSS_CODE);
  if (minor != 0) {
    std::string m = StatusText(minor, GSS_C_MECH_CODE);
    // A damaged AP-REQ comes back as GSS_S_FAILURE with a minor code that reads "Success": no
    // detail at all, and a misleading one in a log line, so the major code's text stands alone.
    if (m == "Success") m.clear();
    // "Unspecified GSS failure. Minor code may provide more information" adds nothing.
    if (!m.empty()) msg = GSS_ROUTINE_ERROR(major) == GSS_S_FAILURE ? std::string(call) + ": " + m : msg + " (" + m + ")";
  }
  Napi::Error err = Napi::Error::New(env, msg);
  err.Set("major", Napi::Number::New(env, major));
  err.Set("minor", Napi::Number::New(env, minor));
  err.Set("call", Napi::String::New(env, call));
  return err;
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

// One security context. `new Context(target)` initiates (client, target like "rcmd@host" or
// "rcmd/host[@REALM]"); `new Context(credential)` accepts (server).
class Context : public Napi::ObjectWrap<Context> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Context",
                       {
                           InstanceMethod("step", &Context::Step),
                           InstanceMethod("wrap", &Context::WrapData),
                           InstanceMethod("unwrap", &Context::UnwrapToken),
                           InstanceMethod("wrapSizeLimit", &Context::WrapSizeLimit),
                           InstanceMethod("dispose", &Context::Dispose),
                           InstanceAccessor("complete", &Context::Complete, nullptr),
                           InstanceAccessor("peerName", &Context::PeerName, nullptr),
                           InstanceAccessor("localName", &Context::LocalName, nullptr),
                           InstanceAccessor("flags", &Context::Flags, nullptr),
                       });
  }

  Context(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Context>(info) {
    Napi::Env env = info.Env();
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
      // An explicit credential cache; otherwise the default one (KRB5CCNAME).
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

 private:
  void Release() {
    OM_uint32 minor;
    if (ctx_ != GSS_C_NO_CONTEXT) gss_delete_sec_context(&minor, &ctx_, GSS_C_NO_BUFFER);
    if (target_ != GSS_C_NO_NAME) gss_release_name(&minor, &target_);
    if (peer_ != GSS_C_NO_NAME) gss_release_name(&minor, &peer_);
    if (ownsCred_ && cred_ != GSS_C_NO_CREDENTIAL) gss_release_cred(&minor, &cred_);
  }

  bool NeedContext(Napi::Env env) {
    if (ctx_ == GSS_C_NO_CONTEXT || !complete_) {
      Napi::Error::New(env, "the GSS-API security context is not established").ThrowAsJavaScriptException();
      return false;
    }
    return true;
  }

  // Feeds the peer's token (or nothing, for the client's first call); returns the token to send
  // (possibly empty). `complete` tells whether the context is established.
  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (complete_) {
      Napi::Error::New(env, "the GSS-API security context is already established").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    gss_buffer_desc input = GSS_C_EMPTY_BUFFER;
    if (info.Length() >= 1 && info[0].IsBuffer()) {
      auto b = info[0].As<Napi::Buffer<uint8_t>>();
      input.length = b.Length();
      input.value = b.Data();
    }
    gss_buffer_desc output = GSS_C_EMPTY_BUFFER;
    OM_uint32 major, minor = 0;
    if (initiator_) {
      major = gss_init_sec_context(
          &minor, cred_, &ctx_, target_, const_cast<gss_OID>(gss_mech_krb5),
          GSS_C_MUTUAL_FLAG | GSS_C_REPLAY_FLAG | GSS_C_SEQUENCE_FLAG | GSS_C_INTEG_FLAG | GSS_C_CONF_FLAG,
          GSS_C_INDEFINITE,
          GSS_C_NO_CHANNEL_BINDINGS, input.length ? &input : GSS_C_NO_BUFFER, nullptr, &output, &flags_,
          nullptr);
    } else {
      major = gss_accept_sec_context(&minor, &ctx_, cred_, &input, GSS_C_NO_CHANNEL_BINDINGS, &peer_,
                                     nullptr, &output, &flags_, nullptr, nullptr);
    }
    if (GSS_ERROR(major)) {
      OM_uint32 ignored;
      gss_release_buffer(&ignored, &output);
      GssError(env, initiator_ ? "gss_init_sec_context" : "gss_accept_sec_context", major, minor)
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    complete_ = !(major & GSS_S_CONTINUE_NEEDED);
    return ToBuffer(env, &output);
  }

  Napi::Value WrapData(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!NeedContext(env)) return env.Undefined();
    if (info.Length() < 2 || !info[0].IsBuffer() || !info[1].IsBoolean()) {
      Napi::TypeError::New(env, "wrap(data: Buffer, confidential: boolean)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto b = info[0].As<Napi::Buffer<uint8_t>>();
    bool conf = info[1].As<Napi::Boolean>();
    gss_buffer_desc in = {b.Length(), b.Data()};
    gss_buffer_desc out = GSS_C_EMPTY_BUFFER;
    int confState = 0;
    OM_uint32 minor = 0;
    OM_uint32 major = gss_wrap(&minor, ctx_, conf ? 1 : 0, GSS_C_QOP_DEFAULT, &in, &confState, &out);
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
    gss_buffer_desc in = {b.Length(), b.Data()};
    gss_buffer_desc out = GSS_C_EMPTY_BUFFER;
    int confState = 0;
    OM_uint32 minor = 0;
    OM_uint32 major = gss_unwrap(&minor, ctx_, &in, &out, &confState, nullptr);
    if (GSS_ERROR(major)) {
      GssError(env, "gss_unwrap", major, minor).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    // A stream must see every token once, in order; datagrams may be lost or reordered, but a
    // replayed one is still refused.
    OM_uint32 refused = strictOrder ? (GSS_S_DUPLICATE_TOKEN | GSS_S_OLD_TOKEN | GSS_S_UNSEQ_TOKEN | GSS_S_GAP_TOKEN)
                                    : GSS_S_DUPLICATE_TOKEN;
    if (major & refused) {
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
    OM_uint32 maxInput = 0, minor = 0;
    OM_uint32 major = gss_wrap_size_limit(&minor, ctx_, conf ? 1 : 0, GSS_C_QOP_DEFAULT, maxToken, &maxInput);
    if (GSS_ERROR(major)) {
      GssError(env, "gss_wrap_size_limit", major, minor).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    return Napi::Number::New(env, maxInput);
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Release();
    complete_ = false;
    return info.Env().Undefined();
  }

  Napi::Value Complete(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), complete_); }

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
    if (ctx_ == GSS_C_NO_CONTEXT || !complete_) return env.Undefined();
    gss_name_t src = GSS_C_NO_NAME, targ = GSS_C_NO_NAME;
    OM_uint32 minor = 0;
    OM_uint32 major =
        gss_inquire_context(&minor, ctx_, &src, &targ, nullptr, nullptr, nullptr, nullptr, nullptr);
    if (GSS_ERROR(major)) {
      GssError(env, "gss_inquire_context", major, minor).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    std::string s = NameText(which == 0 ? src : targ);
    gss_release_name(&minor, &src);
    gss_release_name(&minor, &targ);
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

  bool initiator_ = false;
  bool ownsCred_ = false;
  bool complete_ = false;
  gss_ctx_id_t ctx_ = GSS_C_NO_CONTEXT;
  gss_name_t target_ = GSS_C_NO_NAME;
  gss_name_t peer_ = GSS_C_NO_NAME;
  gss_cred_id_t cred_ = GSS_C_NO_CREDENTIAL;
  Napi::ObjectReference credRef_;
  OM_uint32 flags_ = 0;
};

Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  Napi::Function cred = Credential::Init(env);
  credentialCtor = new Napi::FunctionReference(Napi::Persistent(cred));
  exports.Set("Credential", cred);
  exports.Set("Context", Context::Init(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(ferry_gssapi, InitAll)
