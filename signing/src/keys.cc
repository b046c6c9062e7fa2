// EC keys for model signing: generation, PEM in and out, key ids, and the
// ECDSA sign/verify primitives used by model_signing.cc.
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "ckptguard/atomic_file.h"
#include "ckptguard/input_file.h"
#include "ckptguard/signing/model_signing.h"
#include "ckptguard/sha256.h"
#include "signing_internal.h"

namespace ckptguard::signing {
namespace {

constexpr size_t kMaxKeyFileLen = 64 * 1024;

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

std::string BioText(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return len > 0 ? std::string(data, static_cast<size_t>(len)) : std::string();
}

// NoPassphrase stops OpenSSL from prompting on a terminal for encrypted keys.
int NoPassphrase(char*, int, int, void*) { return 0; }

Result<Curve> KeyCurve(EVP_PKEY* key) {
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC) {
    return MakeError(ErrorCode::kUnsupportedFormat, 0,
                     std::string("not an EC key (") + EVP_PKEY_get0_type_name(key) +
                         "); model signing keys are ECDSA P-256, P-384 or P-521");
  }
  char group[64] = {0};
  size_t group_len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &group_len) != 1) {
    return MakeError(ErrorCode::kMalformed, 0, "EC key without a named curve");
  }
  auto parsed = ParseCurve(group);
  if (!parsed) {
    return MakeError(ErrorCode::kUnsupportedFormat, 0,
                     std::string("EC curve ") + group + " is not allowed (P-256, P-384 or P-521 only)");
  }
  return *parsed;
}

std::string PublicPemOf(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1) return {};
  return BioText(bio.get());
}

}  // namespace

void PkeyDeleter::operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }

std::string_view CurveName(Curve curve) {
  switch (curve) {
    case Curve::kP256: return "P-256";
    case Curve::kP384: return "P-384";
    case Curve::kP521: return "P-521";
  }
  return "P-256";
}

Result<Curve> ParseCurve(std::string_view name) {
  if (name == "P-256" || name == "p256" || name == "P256" || name == "prime256v1" || name == "secp256r1") {
    return Curve::kP256;
  }
  if (name == "P-384" || name == "p384" || name == "P384" || name == "secp384r1") return Curve::kP384;
  if (name == "P-521" || name == "p521" || name == "P521" || name == "secp521r1") return Curve::kP521;
  return MakeError(ErrorCode::kInvalidArgument, 0,
                   "unknown curve '" + std::string(name) + "' (P-256, P-384 or P-521)");
}

// NamedBy: a key parsed from a file's text reports the file as where it failed.
template <typename T>
Result<T> NamedBy(Result<T> result, const std::string& path) {
  if (!result) {
    Error e = std::move(result).error();
    e.where = path;
    return std::unexpected(std::move(e));
  }
  return result;
}

const EVP_MD* CurveDigest(Curve curve) {
  switch (curve) {
    case Curve::kP256: return EVP_sha256();
    case Curve::kP384: return EVP_sha384();
    case Curve::kP521: return EVP_sha512();
  }
  return EVP_sha256();
}

Result<std::string> ReadSmallFile(const std::string& path, size_t max_len) {
  // OpenInputFile refuses a FIFO, device or socket before opening it (nothing
  // blocks) and a file that changed while it was read.
  return ReadInputFile(path, max_len);
}

Result<std::string> SignBytes(const PrivateKey& key, std::string_view data) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  size_t sig_len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, CurveDigest(key.curve()), nullptr, key.pkey()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &sig_len, reinterpret_cast<const unsigned char*>(data.data()),
                     data.size()) != 1) {
    return MakeError(ErrorCode::kInternal, 0, "OpenSSL refused to start an ECDSA signature");
  }
  std::string sig(sig_len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &sig_len,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1) {
    return MakeError(ErrorCode::kInternal, 0, "OpenSSL failed to sign");
  }
  sig.resize(sig_len);
  return sig;
}

bool VerifyBytes(const PublicKey& key, std::string_view data, std::string_view der_sig) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, CurveDigest(key.curve()), nullptr, key.pkey()) != 1) {
    return false;
  }
  const bool ok = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(der_sig.data()), der_sig.size(),
                                   reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  ERR_clear_error();  // a bad signature leaves entries that other OpenSSL users in the process would see
  return ok;
}

Result<PrivateKey> PrivateKey::Generate(Curve curve) {
  const std::string group(CurveName(curve));
  EVP_PKEY* raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", group.c_str());
  if (raw == nullptr) return MakeError(ErrorCode::kInternal, 0, "OpenSSL could not generate an EC key");
  return PrivateKey(PkeyPtr(raw), curve);
}

Result<PrivateKey> PrivateKey::FromPem(std::string_view pem) {
  if (pem.size() > kMaxKeyFileLen) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "private key text is larger than 64 KiB");
  }
  if (pem.find("ENCRYPTED") != std::string_view::npos) {
    return MakeError(ErrorCode::kUnsupportedFormat, 0, "encrypted private keys are not supported");
  }
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return MakeError(ErrorCode::kInternal, 0, "BIO_new_mem_buf failed");
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!key) {
    ERR_clear_error();
    return MakeError(ErrorCode::kMalformed, 0,
                     "no PEM private key (\"PRIVATE KEY\" or \"EC PRIVATE KEY\") could be read");
  }
  CKG_ASSIGN_OR_RETURN(const Curve curve, KeyCurve(key.get()));
  return PrivateKey(std::move(key), curve);
}

Result<PrivateKey> PrivateKey::LoadFile(const std::string& path) {
  CKG_ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(path, kMaxKeyFileLen));
  return NamedBy(FromPem(text), path);
}

Status PrivateKey::WriteFile(const std::string& path) const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PKCS8PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return MakeError(ErrorCode::kInternal, 0, "OpenSSL could not encode the private key");
  }
  const std::string text = BioText(bio.get());
  CKG_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path));
  // Narrow the (still empty) temporary file to 0600 before a key byte is in
  // it; the rename keeps the mode. No umask games: those are process-wide.
  CKG_TRY(file.SetMode(0600));
  CKG_TRY(file.Write(Bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size())));
  return file.Commit();
}

std::string PrivateKey::PublicPem() const { return PublicPemOf(key_.get()); }
std::string PrivateKey::KeyId() const { return ckptguard::Sha256Hex(PublicPem()); }

Result<PublicKey> PublicKey::FromPem(std::string_view text) {
  if (text.size() > kMaxKeyFileLen) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "public key text is larger than 64 KiB");
  }
  static constexpr std::string_view kBegin = "-----BEGIN PUBLIC KEY-----";
  const size_t begin = text.find(kBegin);
  if (begin == std::string_view::npos) {
    return MakeError(ErrorCode::kMalformed, 0, "no \"-----BEGIN PUBLIC KEY-----\" block");
  }
  const std::string_view block = text.substr(begin);
  BioPtr bio(BIO_new_mem_buf(block.data(), static_cast<int>(block.size())));
  if (!bio) return MakeError(ErrorCode::kInternal, 0, "BIO_new_mem_buf failed");
  PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!key) {
    ERR_clear_error();
    return MakeError(ErrorCode::kMalformed, begin, "the PUBLIC KEY block does not decode");
  }
  CKG_ASSIGN_OR_RETURN(const Curve curve, KeyCurve(key.get()));
  PublicKey out;
  out.pem_ = PublicPemOf(key.get());
  out.key_id_ = ckptguard::Sha256Hex(out.pem_);
  out.curve_ = curve;
  out.key_ = std::shared_ptr<EVP_PKEY>(key.release(), PkeyDeleter());
  return out;
}

Result<PublicKey> PublicKey::LoadFile(const std::string& path) {
  CKG_ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(path, kMaxKeyFileLen));
  return NamedBy(FromPem(text), path);
}

Result<PublicKey> PublicKey::FromPrivate(const PrivateKey& key) { return FromPem(key.PublicPem()); }

}  // namespace ckptguard::signing
