// RFC 4121 Wrap tokens for the AES Kerberos enctypes (RFC 3962 and RFC 8009), sealed and opened
// with the OpenSSL that Node carries (AES-NI, SHA extensions) instead of MIT's built-in crypto,
// which is several times slower per byte. The keys and sequence numbers come from the context
// MIT established (its lucid export); the tokens are byte for byte what gss_wrap would accept.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace ferry {

struct Enctype;

class Cfx {
 public:
  // One direction's keys, derived for the given key usage from a base key.
  struct Direction;

  // From a gss_krb5_lucid_context_v1_t; null with *why set when the context is not CFX with an
  // AES enctype (the caller then keeps gss_wrap/gss_unwrap).
  static std::unique_ptr<Cfx> FromLucid(const void* lucid, std::string* why);
  ~Cfx();
  Cfx(const Cfx&) = delete;
  Cfx& operator=(const Cfx&) = delete;

  // Token bytes beyond the plaintext, and where the plaintext sits inside a token.
  size_t Overhead(bool conf) const;
  static size_t DataOffset(bool conf) { return conf ? 32 : 16; }

  // Seals in place the n plaintext bytes the caller put at tok + DataOffset(conf); the token is
  // n + Overhead(conf) bytes from tok. Takes the next send sequence number.
  bool Seal(uint8_t* tok, size_t n, bool conf, std::string* err);

  // A stream takes each token once and in order; datagrams may come late or not at all, but a
  // replayed one is still refused (a window of the last 64, as MIT keeps).
  enum class Order { Stream, Datagram };

  // Opens a token in place: checks it, decrypts it, takes its sequence number. The plaintext is
  // then at tok + *at, *length bytes.
  bool Open(uint8_t* tok, size_t len, Order order, bool* conf, size_t* at, size_t* length, std::string* err);

 private:
  Cfx() = default;

  const Enctype* type_ = nullptr;
  bool initiator_ = false;
  bool acceptorSubkey_ = false;

  std::mutex sendMu_;
  uint64_t sendSeq_ = 0;
  std::unique_ptr<Direction> send_;

  std::mutex recvMu_;
  uint64_t recvNext_ = 0;
  uint64_t recvSeen_ = 0;  // bit i: recvNext_ - 1 - i arrived
  std::unique_ptr<Direction> recvCtxKey_;
  std::unique_ptr<Direction> recvSubkey_;
};

}  // namespace ferry
