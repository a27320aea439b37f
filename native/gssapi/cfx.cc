#include "cfx.h"

#include <gssapi/gssapi_krb5.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

namespace ferry {

// What differs between the AES enctypes Ferry seals itself.
struct Enctype {
  int32_t number;
  const char* name;
  size_t keyLength;    // AES key, bytes
  const char* digest;  // the HMAC's hash
  size_t macLength;    // the truncated HMAC in a token, bytes
  bool rfc8009;        // KDF-HMAC-SHA2 keys, and the HMAC taken over IV | ciphertext
};

namespace {

const Enctype kEnctypes[] = {
    {17, "aes128-cts-hmac-sha1-96", 16, "SHA1", 12, false},
    {18, "aes256-cts-hmac-sha1-96", 32, "SHA1", 12, false},
    {19, "aes128-cts-hmac-sha256-128", 16, "SHA256", 16, true},
    {20, "aes256-cts-hmac-sha384-192", 32, "SHA384", 24, true},
};

// RFC 4121 section 2: the key usages of Wrap tokens, with and without confidentiality.
constexpr uint32_t kAcceptorSeal = 22;
constexpr uint32_t kInitiatorSeal = 24;

// RFC 4121 section 4.2.2 flags.
constexpr uint8_t kSentByAcceptor = 0x01;
constexpr uint8_t kSealed = 0x02;
constexpr uint8_t kAcceptorSubkey = 0x04;

constexpr size_t kBlock = 16;
constexpr size_t kHeader = 16;
constexpr size_t kMaxMac = 64;
const uint8_t kZeroBlock[kBlock] = {};

void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
void Put64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
uint64_t Get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

// RFC 3961 section 5.1 n-fold: `in` replicated, each copy rotated right 13 bits more than the
// last, to the least common multiple of both lengths, then cut into `outLen`-byte pieces that
// are added with end-around carry.
void NFold(const uint8_t* in, size_t inLen, uint8_t* out, size_t outLen) {
  size_t lcm = std::lcm(inLen, outLen);
  size_t bits = inLen * 8;
  std::vector<uint8_t> stretched(lcm, 0);
  for (size_t i = 0; i < lcm * 8; i++) {
    size_t rotation = (13 * (i / bits)) % bits;
    size_t src = (i % bits + bits - rotation) % bits;
    if ((in[src / 8] >> (7 - src % 8)) & 1) stretched[i / 8] |= static_cast<uint8_t>(0x80 >> (i % 8));
  }
  std::vector<unsigned> sum(outLen, 0);
  for (size_t piece = 0; piece < lcm; piece += outLen) {
    unsigned carry = 0;
    for (size_t j = outLen; j-- > 0;) {
      unsigned v = sum[j] + stretched[piece + j] + carry;
      sum[j] = v & 0xff;
      carry = v >> 8;
    }
    while (carry) {
      for (size_t j = outLen; j-- > 0 && carry;) {
        unsigned v = sum[j] + carry;
        sum[j] = v & 0xff;
        carry = v >> 8;
      }
    }
  }
  for (size_t j = 0; j < outLen; j++) out[j] = static_cast<uint8_t>(sum[j]);
}

const EVP_CIPHER* Aes(size_t keyLength, bool cbc) {
  if (keyLength == 16) return cbc ? EVP_aes_128_cbc() : EVP_aes_128_ecb();
  return cbc ? EVP_aes_256_cbc() : EVP_aes_256_ecb();
}

EVP_CIPHER_CTX* NewCipher(size_t keyLength, bool cbc, const uint8_t* key, bool encrypt) {
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  if (c == nullptr) return nullptr;
  if (EVP_CipherInit_ex(c, Aes(keyLength, cbc), nullptr, key, kZeroBlock, encrypt ? 1 : 0) != 1 ||
      EVP_CIPHER_CTX_set_padding(c, 0) != 1) {
    EVP_CIPHER_CTX_free(c);
    return nullptr;
  }
  return c;
}

// One AES block in place (ECB: a single block of CBC with a zero IV).
bool OneBlock(EVP_CIPHER_CTX* ecb, uint8_t* block) {
  int n = 0;
  return EVP_CipherUpdate(ecb, block, &n, block, kBlock) == 1 && n == static_cast<int>(kBlock);
}

// RFC 3961 section 5.1 DK with RFC 3962's AES: the n-folded constant encrypted, then each block
// encrypted again, until the key is long enough.
bool DeriveDk(const Enctype& t, const uint8_t* base, const uint8_t constant[5], uint8_t* out, size_t outLen) {
  EVP_CIPHER_CTX* ecb = NewCipher(t.keyLength, false, base, true);
  if (ecb == nullptr) return false;
  uint8_t block[kBlock];
  NFold(constant, 5, block, kBlock);
  bool ok = true;
  for (size_t have = 0; ok && have < outLen; have += kBlock) {
    ok = OneBlock(ecb, block);
    memcpy(out + have, block, std::min(kBlock, outLen - have));
  }
  OPENSSL_cleanse(block, sizeof block);
  EVP_CIPHER_CTX_free(ecb);
  return ok;
}

// RFC 8009 section 3 KDF-HMAC-SHA2 (SP 800-108 counter mode, one round): HMAC(base, 1 | label |
// 0 | bits), truncated.
bool DeriveKdf(const Enctype& t, const uint8_t* base, const uint8_t label[5], uint8_t* out, size_t outLen) {
  uint8_t input[4 + 5 + 1 + 4] = {0, 0, 0, 1};
  memcpy(input + 4, label, 5);
  input[9] = 0;
  uint32_t bits = static_cast<uint32_t>(outLen * 8);
  for (int i = 0; i < 4; i++) input[10 + i] = static_cast<uint8_t>(bits >> (24 - 8 * i));
  uint8_t mac[kMaxMac];
  size_t macLen = 0;
  if (EVP_Q_mac(nullptr, "HMAC", nullptr, t.digest, nullptr, base, t.keyLength, input, sizeof input, mac,
                sizeof mac, &macLen) == nullptr ||
      macLen < outLen)
    return false;
  memcpy(out, mac, outLen);
  OPENSSL_cleanse(mac, sizeof mac);
  return true;
}

// An HMAC key, ready to start a new MAC without setting the key up again.
class Hmac {
 public:
  bool Init(const char* digest, const uint8_t* key, size_t keyLen) {
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (mac == nullptr) return false;
    ctx_ = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);
    if (ctx_ == nullptr) return false;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>(digest), 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_init(ctx_, key, keyLen, params) == 1;
  }
  ~Hmac() { EVP_MAC_CTX_free(ctx_); }

  // MAC of the concatenation of up to three pieces into out (kMaxMac bytes).
  bool Of(uint8_t* out, const uint8_t* a, size_t an, const uint8_t* b = nullptr, size_t bn = 0,
          const uint8_t* c = nullptr, size_t cn = 0) {
    size_t len = 0;
    // A NULL key restarts with the key already set.
    return EVP_MAC_init(ctx_, nullptr, 0, nullptr) == 1 && EVP_MAC_update(ctx_, a, an) == 1 &&
           (bn == 0 || EVP_MAC_update(ctx_, b, bn) == 1) && (cn == 0 || EVP_MAC_update(ctx_, c, cn) == 1) &&
           EVP_MAC_final(ctx_, out, &len, kMaxMac) == 1;
  }

 private:
  EVP_MAC_CTX* ctx_ = nullptr;
};

}  // namespace

// One direction's keys for one base key and usage (RFC 3961 Ke, Ki, Kc), and its AES contexts:
// encrypting for what we send, decrypting for what we receive.
struct Cfx::Direction {
  const Enctype& type;
  EVP_CIPHER_CTX* cbc = nullptr;
  EVP_CIPHER_CTX* ecb = nullptr;
  Hmac seal;  // Ki: the MAC of a sealed token
  Hmac sign;  // Kc: the checksum of a token without confidentiality

  Direction(const Enctype& t) : type(t) {}
  ~Direction() {
    EVP_CIPHER_CTX_free(cbc);
    EVP_CIPHER_CTX_free(ecb);
  }

  bool Init(const uint8_t* base, uint32_t usage, bool encrypt) {
    uint8_t label[5] = {static_cast<uint8_t>(usage >> 24), static_cast<uint8_t>(usage >> 16),
                        static_cast<uint8_t>(usage >> 8), static_cast<uint8_t>(usage), 0};
    size_t integrityKey = type.rfc8009 ? type.macLength : type.keyLength;
    uint8_t ke[32], ki[32], kc[32];
    auto derive = [&](uint8_t kind, uint8_t* out, size_t len) {
      label[4] = kind;
      return type.rfc8009 ? DeriveKdf(type, base, label, out, len) : DeriveDk(type, base, label, out, len);
    };
    bool ok = derive(0xAA, ke, type.keyLength) && derive(0x55, ki, integrityKey) && derive(0x99, kc, integrityKey);
    if (ok) {
      cbc = NewCipher(type.keyLength, true, ke, encrypt);
      ecb = NewCipher(type.keyLength, false, ke, encrypt);
      ok = cbc && ecb && seal.Init(type.digest, ki, integrityKey) && sign.Init(type.digest, kc, integrityKey);
    }
    OPENSSL_cleanse(ke, sizeof ke);
    OPENSSL_cleanse(ki, sizeof ki);
    OPENSSL_cleanse(kc, sizeof kc);
    return ok;
  }

  // AES-CBC with ciphertext stealing (RFC 3962: the last two blocks always swapped), zero IV, in
  // place; len >= 16 (a token always has its 16-byte confounder).
  bool Encrypt(uint8_t* p, size_t len) {
    if (len == kBlock) return OneBlock(ecb, p);
    size_t blocks = (len + kBlock - 1) / kBlock;
    size_t tail = len - kBlock * (blocks - 1);  // 1..16 bytes in the last block
    size_t head = kBlock * (blocks - 2);        // plain CBC before the last two blocks
    uint8_t chain[kBlock] = {};
    if (head > 0) {
      int n = 0;
      if (EVP_CipherInit_ex(cbc, nullptr, nullptr, nullptr, kZeroBlock, -1) != 1 ||
          EVP_CipherUpdate(cbc, p, &n, p, static_cast<int>(head)) != 1 || n != static_cast<int>(head))
        return false;
      memcpy(chain, p + head - kBlock, kBlock);
    }
    uint8_t last1[kBlock], last2[kBlock];
    for (size_t i = 0; i < kBlock; i++) last1[i] = p[head + i] ^ chain[i];
    if (!OneBlock(ecb, last1)) return false;
    for (size_t i = 0; i < kBlock; i++) last2[i] = (i < tail ? p[head + kBlock + i] : 0) ^ last1[i];
    if (!OneBlock(ecb, last2)) return false;
    memcpy(p + head, last2, kBlock);
    memcpy(p + head + kBlock, last1, tail);
    return true;
  }

  bool Decrypt(uint8_t* p, size_t len) {
    if (len == kBlock) return OneBlock(ecb, p);
    size_t blocks = (len + kBlock - 1) / kBlock;
    size_t tail = len - kBlock * (blocks - 1);
    size_t head = kBlock * (blocks - 2);
    uint8_t chain[kBlock] = {};
    if (head > 0) {
      memcpy(chain, p + head - kBlock, kBlock);  // before CBC overwrites it
      int n = 0;
      if (EVP_CipherInit_ex(cbc, nullptr, nullptr, nullptr, kZeroBlock, -1) != 1 ||
          EVP_CipherUpdate(cbc, p, &n, p, static_cast<int>(head)) != 1 || n != static_cast<int>(head))
        return false;
    }
    // The full last CBC block comes first; decrypted, it is the padded last plaintext block
    // XOR the stolen block, whose missing bytes it therefore holds.
    uint8_t last[kBlock], stolen[kBlock];
    memcpy(last, p + head, kBlock);
    if (!OneBlock(ecb, last)) return false;
    memcpy(stolen, p + head + kBlock, tail);
    memcpy(stolen + tail, last + tail, kBlock - tail);
    for (size_t i = 0; i < tail; i++) p[head + kBlock + i] = last[i] ^ stolen[i];
    if (!OneBlock(ecb, stolen)) return false;
    for (size_t i = 0; i < kBlock; i++) p[head + i] = stolen[i] ^ chain[i];
    return true;
  }
};

namespace {

const Enctype* FindEnctype(int32_t number) {
  for (const Enctype& t : kEnctypes)
    if (t.number == number) return &t;
  return nullptr;
}

}  // namespace

std::unique_ptr<Cfx> Cfx::FromLucid(const void* lucid, std::string* why) {
  const auto* l = static_cast<const gss_krb5_lucid_context_v1_t*>(lucid);
  if (l->version != 1 || l->protocol != 1) {
    *why = "not an RFC 4121 (CFX) context";
    return nullptr;
  }
  const gss_krb5_lucid_key_t& ctxKey = l->cfx_kd.ctx_key;
  const gss_krb5_lucid_key_t& subkey = l->cfx_kd.acceptor_subkey;
  bool haveSubkey = l->cfx_kd.have_acceptor_subkey != 0;
  const gss_krb5_lucid_key_t& sendKey = haveSubkey ? subkey : ctxKey;
  const Enctype* t = FindEnctype(static_cast<int32_t>(sendKey.type));
  if (t == nullptr || sendKey.length != t->keyLength ||
      (haveSubkey && (ctxKey.type != sendKey.type || ctxKey.length != sendKey.length))) {
    *why = "enctype " + std::to_string(sendKey.type) + " is not one of the AES enctypes";
    return nullptr;
  }
  std::unique_ptr<Cfx> cfx(new Cfx());
  cfx->type_ = t;
  cfx->initiator_ = l->initiate != 0;
  cfx->acceptorSubkey_ = haveSubkey;
  cfx->sendSeq_ = l->send_seq;
  cfx->recvNext_ = l->recv_seq;
  uint32_t sendUsage = cfx->initiator_ ? kInitiatorSeal : kAcceptorSeal;
  uint32_t recvUsage = cfx->initiator_ ? kAcceptorSeal : kInitiatorSeal;
  cfx->send_.reset(new Direction(*t));
  cfx->recvCtxKey_.reset(new Direction(*t));
  bool ok = cfx->send_->Init(static_cast<const uint8_t*>(sendKey.data), sendUsage, true) &&
            cfx->recvCtxKey_->Init(static_cast<const uint8_t*>(ctxKey.data), recvUsage, false);
  if (ok && haveSubkey) {
    cfx->recvSubkey_.reset(new Direction(*t));
    ok = cfx->recvSubkey_->Init(static_cast<const uint8_t*>(subkey.data), recvUsage, false);
  }
  if (!ok) {
    *why = "OpenSSL could not set up " + std::string(t->name);
    return nullptr;
  }
  return cfx;
}

Cfx::~Cfx() = default;

size_t Cfx::Overhead(bool conf) const {
  // Sealed: header, confounder, data, header copy, MAC. Otherwise: header, data, checksum.
  return conf ? kHeader + kBlock + kHeader + type_->macLength : kHeader + type_->macLength;
}

bool Cfx::Seal(uint8_t* tok, size_t n, bool conf, std::string* err) {
  std::lock_guard<std::mutex> lock(sendMu_);
  Direction& d = *send_;
  const size_t h = type_->macLength;
  tok[0] = 0x05;
  tok[1] = 0x04;
  tok[2] = static_cast<uint8_t>((initiator_ ? 0 : kSentByAcceptor) | (conf ? kSealed : 0) |
                                (acceptorSubkey_ ? kAcceptorSubkey : 0));
  tok[3] = 0xff;
  Put16(tok + 4, 0);  // EC: no filler (CTS needs none); for a checksum, set after it is taken
  Put16(tok + 6, 0);  // RRC: not rotated
  Put64(tok + 8, sendSeq_);
  uint8_t mac[kMaxMac];
  if (conf) {
    uint8_t* body = tok + kHeader;
    size_t plain = kBlock + n + kHeader;  // confounder | data | header copy
    memcpy(body + kBlock + n, tok, kHeader);
    bool ok = RAND_bytes(body, kBlock) == 1;
    if (type_->rfc8009) {
      ok = ok && d.Encrypt(body, plain) && d.seal.Of(mac, kZeroBlock, kBlock, body, plain);
    } else {
      ok = ok && d.seal.Of(mac, body, plain) && d.Encrypt(body, plain);
    }
    if (!ok) {
      *err = "OpenSSL failed to seal a token";
      return false;
    }
    memcpy(body + plain, mac, h);
  } else {
    if (!d.sign.Of(mac, tok + kHeader, n, tok, kHeader)) {
      *err = "OpenSSL failed to checksum a token";
      return false;
    }
    memcpy(tok + kHeader + n, mac, h);
    Put16(tok + 4, static_cast<uint16_t>(h));
  }
  OPENSSL_cleanse(mac, sizeof mac);
  sendSeq_++;
  return true;
}

bool Cfx::Open(uint8_t* tok, size_t len, Order order, bool* conf, size_t* at, size_t* length, std::string* err) {
  std::lock_guard<std::mutex> lock(recvMu_);
  if (len < kHeader || tok[0] != 0x05 || tok[1] != 0x04 || tok[3] != 0xff) {
    *err = "not an RFC 4121 wrap token";
    return false;
  }
  const uint8_t flags = tok[2];
  if (((flags & kSentByAcceptor) != 0) != initiator_) {
    *err = "the token says it was sent the other way (reflected back)";
    return false;
  }
  Direction* d = recvCtxKey_.get();
  if (flags & kAcceptorSubkey) {
    if (!recvSubkey_) {
      *err = "the token names an acceptor subkey this context does not have";
      return false;
    }
    d = recvSubkey_.get();
  }
  const bool sealed = (flags & kSealed) != 0;
  const size_t ec = Get16(tok + 4);
  const size_t rrc = Get16(tok + 6);
  const uint64_t seq = Get64(tok + 8);
  const size_t h = type_->macLength;
  uint8_t* body = tok + kHeader;
  size_t bodyLen = len - kHeader;
  if (rrc != 0 && bodyLen > 0) {
    // The sender rotated the body right by RRC bytes; rotate it back.
    std::rotate(body, body + rrc % bodyLen, body + bodyLen);
    Put16(tok + 6, 0);
  }
  uint8_t mac[kMaxMac];
  if (sealed) {
    if (bodyLen < kBlock + ec + kHeader + h) {
      *err = "the token is too short";
      return false;
    }
    size_t cipher = bodyLen - h;
    bool ok = type_->rfc8009
                  ? d->seal.Of(mac, kZeroBlock, kBlock, body, cipher) && CRYPTO_memcmp(mac, body + cipher, h) == 0 &&
                        d->Decrypt(body, cipher)
                  : d->Decrypt(body, cipher) && d->seal.Of(mac, body, cipher) &&
                        CRYPTO_memcmp(mac, body + cipher, h) == 0;
    if (!ok) {
      *err = "the token does not verify (altered, or not sealed by this context)";
      return false;
    }
    const uint8_t* copy = body + cipher - kHeader;
    if (copy[0] != 0x05 || copy[1] != 0x04 || copy[2] != flags || copy[3] != 0xff || Get16(copy + 4) != ec ||
        memcmp(copy + 8, tok + 8, 8) != 0) {
      *err = "the token's header differs from the copy sealed inside it";
      return false;
    }
    *at = kHeader + kBlock;
    *length = cipher - kBlock - ec - kHeader;
  } else {
    if (ec != h || bodyLen < h) {
      *err = "the token's checksum length is wrong";
      return false;
    }
    size_t n = bodyLen - h;
    uint8_t header[kHeader];
    memcpy(header, tok, kHeader);
    Put16(header + 4, 0);
    Put16(header + 6, 0);
    if (!d->sign.Of(mac, body, n, header, kHeader) || CRYPTO_memcmp(mac, body + n, h) != 0) {
      *err = "the token's checksum does not verify (altered, or not from this context)";
      return false;
    }
    *at = kHeader;
    *length = n;
  }
  // Sequence numbers count only for tokens that verified.
  if (seq >= recvNext_) {
    if (order == Order::Stream && seq != recvNext_) {
      *err = "a token is missing before this one";
      return false;
    }
    uint64_t shift = seq - recvNext_ + 1;
    recvSeen_ = shift >= 64 ? 0 : recvSeen_ << shift;
    recvSeen_ |= 1;
    recvNext_ = seq + 1;
  } else {
    uint64_t back = recvNext_ - 1 - seq;
    if (order == Order::Stream || back >= 64 || (recvSeen_ >> back) & 1) {
      *err = back < 64 && ((recvSeen_ >> back) & 1) ? "a token arrived twice (replayed)"
                                                     : "a token arrived after later ones";
      return false;
    }
    recvSeen_ |= uint64_t{1} << back;
  }
  *conf = sealed;
  return true;
}

}  // namespace ferry
