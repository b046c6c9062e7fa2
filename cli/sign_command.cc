// `ckptguard sign`, `ckptguard keygen` and `ckptguard verify-signature`.
#include "sign_command.h"

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <system_error>

#include "ckptguard/atomic_file.h"
#include "ckptguard/signing/model_signing.h"
#include "ckptguard/printable.h"
#include "cli_util.h"

namespace ckptguard::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kFormatHelp = R"(The format: OpenSSF model signing v1.0 in key mode, as written by the reference
'model_signing sign key' (sigstore/model-transparency). The signature is a
Sigstore bundle (JSON): a DSSE envelope over an in-toto statement that lists
every file of the model (its path relative to the model folder, "." for a
single-file model) with its SHA-256, plus the ignored paths. Keys are ECDSA
P-256, P-384 or P-521 (signed with SHA-256, -384, -512); the bundle names the
key by the SHA-256 of its PEM public key (the "hint"), no transparency log,
no certificates. 'model_signing verify key --signature SIG --public_key PUB.pem
PATH' accepts our signatures, and 'ckptguard verify-signature' accepts its.
)";

bool IsDirectory(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(fs::symlink_status(path, ec));
}

// DefaultSignature: PATH/model.sig for a folder, PATH.sig for a file.
std::string DefaultSignature(const std::string& model_path) {
  if (IsDirectory(model_path)) return (fs::path(model_path) / "model.sig").string();
  std::string p = model_path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p + ".sig";
}

// SignatureName: the signature's path relative to the model folder when it is
// inside it ("model.sig"), else empty.
std::string SignatureName(const std::string& model_path, const std::string& signature_path) {
  if (!IsDirectory(model_path)) return {};
  std::error_code ec;
  const fs::path model = fs::weakly_canonical(model_path, ec);
  if (ec) return {};
  const fs::path sig = fs::weakly_canonical(signature_path, ec);
  if (ec) return {};
  const fs::path rel = sig.lexically_relative(model);
  if (rel.empty() || rel.native().starts_with("..")) return {};
  return rel.generic_string();
}

// RelativeIgnorePaths: --ignore-paths may name paths relative to the model
// folder ("ignore-me") or paths as typed from here ("model/ignore-me").
std::vector<std::string> RelativeIgnorePaths(const std::string& model_path, const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  std::error_code ec;
  const fs::path model = fs::weakly_canonical(model_path, ec);
  for (const std::string& p : paths) {
    if (!ec && IsDirectory(model_path)) {
      std::error_code ec2;
      const bool absolute = fs::path(p).is_absolute();
      if (absolute || (fs::exists(fs::symlink_status(p, ec2)) &&
                       !fs::exists(fs::symlink_status(fs::path(model_path) / p, ec2)))) {
        const fs::path rel = fs::weakly_canonical(p, ec2).lexically_relative(model);
        if (!ec2 && !rel.empty() && !rel.native().starts_with("..")) {
          out.push_back(rel.generic_string());
          continue;
        }
      }
    }
    out.push_back(p);
  }
  return out;
}

// IsVerificationFailure: the signature or the files do not match (exit 1), as
// opposed to inputs that could not be read or used (exit 2).
bool IsVerificationFailure(const Error& e) {
  return e.code != ErrorCode::kIo && e.code != ErrorCode::kInvalidArgument && e.code != ErrorCode::kInternal;
}

}  // namespace

void AddSignCommand(CLI::App& app, SignFlags& flags) {
  CLI::App* cmd = app.add_subcommand("sign", "Sign a model file or folder (OpenSSF model signing v1.0, key mode)");
  cmd->footer(std::string(R"(What it does:
  Hashes every regular file of PATH (a folder: all files below it, except the
  ignored paths, .git*, and the signature file itself; a file: that file) with
  SHA-256, signs the list with the ECDSA private key, and writes the bundle
  atomically (temporary file, then rename). Symbolic links are refused.

)") + kFormatHelp + R"(
Exit status: 0 signed, 2 the key, the model or the output could not be used.

Examples:
  ckptguard keygen --out signing-key.pem > signing-key.pub.pem
  ckptguard sign models/bert --key signing-key.pem            # models/bert/model.sig
  ckptguard sign model.safetensors --key signing-key.pem      # model.safetensors.sig
)");
  cmd->add_option("path", flags.model_path, "Model file or folder")->required()->type_name("PATH");
  cmd->add_option("--key", flags.key_path, "EC private key, PEM (PKCS#8 or SEC1)")->required()->type_name("PRIVATE.pem");
  cmd->add_option("--signature", flags.signature_path, "Where to write the bundle (default: PATH/model.sig, PATH.sig)")
      ->type_name("OUT");
  cmd->add_option("--ignore-paths", flags.ignore_paths, "Paths in the model folder to leave out (recorded)")
      ->type_name("P");
}

int RunSign(const SignFlags& flags) {
  Result<signing::PrivateKey> key = signing::PrivateKey::LoadFile(flags.key_path);
  if (!key) {
    ReportError(flags.key_path, key.error());
    return kExitError;
  }
  const std::string sig_path = flags.signature_path.empty() ? DefaultSignature(flags.model_path) : flags.signature_path;
  signing::SignOptions options;
  options.ignore_paths = RelativeIgnorePaths(flags.model_path, flags.ignore_paths);
  options.signature_name = SignatureName(flags.model_path, sig_path);
  Result<std::string> bundle = signing::SignPath(*key, flags.model_path, options);
  if (!bundle) {
    ReportError(flags.model_path, bundle.error());
    return kExitError;
  }
  bundle->push_back('\n');
  Status written = WriteFileAtomically(
      sig_path, Bytes(reinterpret_cast<const uint8_t*>(bundle->data()), bundle->size()));
  if (!written) {
    ReportError(sig_path, written.error());
    return kExitError;
  }
  std::cout << "signed " << flags.model_path << " with key " << key->KeyId() << " ("
            << signing::CurveName(key->curve()) << "): " << sig_path << "\n";
  return kExitOk;
}

void AddKeygenCommand(CLI::App& app, KeygenFlags& flags) {
  CLI::App* cmd = app.add_subcommand("keygen", "Make an ECDSA key pair for 'ckptguard sign'");
  cmd->footer(R"(What it does:
  Generates an EC private key, writes it as PKCS#8 PEM to --out (mode 0600,
  atomically), and prints the public key PEM on stdout (give it to whoever
  verifies) and its key id (the SHA-256 of that PEM text, the "hint" in the
  bundles it signs) on stderr.

Exit status: 0 written, 2 the file could not be written.

Example:
  ckptguard keygen --out signing-key.pem --curve P-384 > signing-key.pub.pem
)");
  cmd->add_option("--out", flags.out_path, "Private key file to write")->required()->type_name("KEY.pem");
  cmd->add_option("--curve", flags.curve, "P-256, P-384 or P-521")->capture_default_str()->check(
      CLI::IsMember({"P-256", "P-384", "P-521"}));
}

int RunKeygen(const KeygenFlags& flags) {
  Result<signing::Curve> curve = signing::ParseCurve(flags.curve);
  if (!curve) {
    ReportError(flags.curve, curve.error());
    return kExitError;
  }
  Result<signing::PrivateKey> key = signing::PrivateKey::Generate(*curve);
  if (!key) {
    ReportError(flags.out_path, key.error());
    return kExitError;
  }
  Status written = key->WriteFile(flags.out_path);
  if (!written) {
    ReportError(flags.out_path, written.error());
    return kExitError;
  }
  std::cout << key->PublicPem();
  std::cerr << "ckptguard keygen: wrote " << flags.out_path << " (" << signing::CurveName(*curve) << "), key id "
            << key->KeyId() << "\n";
  return kExitOk;
}

void AddVerifySignatureCommand(CLI::App& app, VerifySignatureFlags& flags) {
  CLI::App* cmd = app.add_subcommand("verify-signature", "Verify a model's OpenSSF model signing signature");
  cmd->footer(std::string(R"(What it checks:
  The bundle's ECDSA signature with the trusted key it names (one of --key),
  the statement's type and digests, then re-hashes PATH and requires exactly
  the signed files with the signed SHA-256: a changed, missing or extra file
  fails, naming it. Paths the signature records as ignored (and the signature
  file, and .git*) are left out, as are --ignore-paths.

)") + kFormatHelp + R"(
Exit status: 0 verified, 1 it does not verify (the reason is printed),
2 a file could not be read or the arguments are unusable.

Examples:
  ckptguard verify-signature models/bert --key signing-key.pub.pem
  ckptguard verify-signature model.bin --signature model.bin.sig --key a.pem --key b.pem --json
)");
  cmd->add_option("path", flags.model_path, "Model file or folder")->required()->type_name("PATH");
  cmd->add_option("--signature", flags.signature_path, "The bundle (default: PATH/model.sig, PATH.sig)")
      ->type_name("SIG");
  cmd->add_option("--key", flags.key_paths, "Trusted EC public key, PEM (repeatable)")->required()->type_name(
      "PUBLIC.pem");
  cmd->add_option("--ignore-paths", flags.ignore_paths, "Paths in the model folder to leave out")->type_name("P");
  cmd->add_flag("--json", flags.json, "One JSON object: path, ok, key_id, subject, files, error");
  AddFormatOption(*cmd, flags.json);
}

int RunVerifySignature(const VerifySignatureFlags& flags) {
  std::vector<signing::PublicKey> trusted;
  for (const std::string& path : flags.key_paths) {
    Result<signing::PublicKey> key = signing::PublicKey::LoadFile(path);
    if (!key) {
      ReportError(path, key.error());
      return kExitError;
    }
    trusted.push_back(std::move(*key));
  }
  const std::string sig_path = flags.signature_path.empty() ? DefaultSignature(flags.model_path) : flags.signature_path;
  signing::SignOptions options;
  Result<std::string> bundle = signing::ReadBundleFile(sig_path, options);
  if (!bundle) {
    ReportError(sig_path, bundle.error());
    return kExitError;
  }
  options.ignore_paths = RelativeIgnorePaths(flags.model_path, flags.ignore_paths);
  options.signature_name = SignatureName(flags.model_path, sig_path);
  Result<signing::VerifiedStatement> verified = signing::VerifyPath(*bundle, flags.model_path, trusted, options);
  const int status = verified ? kExitOk : (IsVerificationFailure(verified.error()) ? kExitFindings : kExitError);
  if (flags.json) {
    json out{{"path", flags.model_path}, {"signature", sig_path}, {"ok", verified.has_value()}};
    if (verified) {
      out["key_id"] = verified->key_id;
      out["subject"] = verified->subject_name;
      out["root_sha256"] = verified->root_sha256;
      json files = json::array();
      for (const signing::Resource& r : verified->resources) files.push_back({{"name", r.name}, {"sha256", r.sha256_hex}});
      out["files"] = std::move(files);
    } else {
      const Error& e = verified.error();
      out["error"] = {{"code", ErrorCodeName(e.code)}, {"where", e.where}, {"detail", e.detail}};
    }
    std::cout << DumpJson(Stamp(std::move(out), "verify-signature"), -1) << "\n";
  } else if (verified) {
    std::cout << flags.model_path << ": signature OK (key " << verified->key_id << ", "
              << verified->resources.size() << " file" << (verified->resources.size() == 1 ? "" : "s") << ")\n";
  } else if (status == kExitFindings) {
    std::cout << Printable(flags.model_path) << ": signature does NOT verify: " << Printable(verified.error().ToString()) << "\n";
  } else {
    ReportError(flags.model_path, verified.error());
  }
  std::cout.flush();
  return status;
}

}  // namespace ckptguard::cli
