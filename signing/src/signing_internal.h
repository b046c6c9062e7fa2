// Helpers shared by the signing sources; private to signing/.
#ifndef CKPTGUARD_SIGNING_SRC_SIGNING_INTERNAL_H_
#define CKPTGUARD_SIGNING_SRC_SIGNING_INTERNAL_H_

#include <openssl/evp.h>

#include <string>
#include <string_view>

#include "ckptguard/signing/model_signing.h"

namespace ckptguard::signing {

// CurveDigest: SHA-256 for P-256, SHA-384 for P-384, SHA-512 for P-521.
const EVP_MD* CurveDigest(Curve curve);
// ReadSmallFile reads all of `path`, failing with kLimitExceeded past `max_len`.
Result<std::string> ReadSmallFile(const std::string& path, size_t max_len);
// SignBytes: DER ECDSA signature of `data` with the curve's hash.
Result<std::string> SignBytes(const PrivateKey& key, std::string_view data);
// VerifyBytes: whether `der_sig` is a valid signature of `data` by `key`.
bool VerifyBytes(const PublicKey& key, std::string_view data, std::string_view der_sig);

}  // namespace ckptguard::signing

#endif  // CKPTGUARD_SIGNING_SRC_SIGNING_INTERNAL_H_
