// Fuzz target for VerifyBundle (signing/model_signing.h): the input is a
// Sigstore bundle (JSON) checked against one fixed trusted P-256 key, whose
// private half was thrown away when this file was written.
//
// Invariants checked (abort on violation):
//  * never a crash and never kInternal;
//  * never verified: nobody holds the key, and the fuzzer cannot forge ECDSA,
//    so a bundle that verifies means a check was skipped;
//  * a failure is never kIo (no file is read) and is deterministic (the same
//    error twice).
// Seeds (fuzz/corpus/model_signing/) are model_signing's interop bundles
// (the goldens copied in tests/data/model-signing) as they are, plus copies whose publicKey
// names this key (hint or rawBytes), so that mutations reach the DSSE
// signature check and the statement parser behind it.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/error.h"
#include "ckptguard/signing/model_signing.h"
#include "fuzz_check.h"

namespace {

using ckptguard::ErrorCode;
using ckptguard::fuzz::Check;
using ckptguard::signing::PublicKey;

constexpr std::string_view kTrustedPem =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEwpXdFJgegA79rXI3I2dCn4vuV7z4\n"
    "iftky+v3psqOcocbWf9Hsl545aRHsaotKfCxSR1nJfHFEPc17F8Gnqxw1Q==\n"
    "-----END PUBLIC KEY-----\n";

const std::vector<PublicKey>& Trusted() {
  static const std::vector<PublicKey> keys = [] {
    auto key = PublicKey::FromPem(kTrustedPem);
    Check(key.has_value(), "the fixed key parses", key ? "" : key.error().ToString());
    return std::vector<PublicKey>{*key};
  }();
  return keys;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bundle(reinterpret_cast<const char*>(data), size);
  ckptguard::signing::SignOptions options;
  options.max_bundle_len = 1 << 20;
  const auto verified = ckptguard::signing::VerifyBundle(bundle, Trusted(), options);
  Check(!verified.has_value(), "a bundle verified against a key nobody holds");
  const ckptguard::Error& e = verified.error();
  Check(e.code != ErrorCode::kInternal, "never kInternal", e.ToString());
  Check(e.code != ErrorCode::kIo, "no kIo: nothing is read", e.ToString());
  const auto again = ckptguard::signing::VerifyBundle(bundle, Trusted(), options);
  Check(!again.has_value() && again.error().ToString() == e.ToString(), "verification is deterministic",
        e.ToString());
  return 0;
}
