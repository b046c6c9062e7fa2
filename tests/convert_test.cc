// Writers and `ckptguard convert`: atomic writes under injected failures and
// kill -9, safetensors files readable by an independent reader, conversions
// that keep every tensor bit for bit and load in real torch.
#define BOOST_TEST_MODULE convert_test
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <deque>
#include <nlohmann/json.hpp>
#include <thread>

#include "ckptguard/atomic_file.h"
#include "ckptguard/checkpoint.h"
#include "ckptguard/safetensors_reader.h"
#include "ckptguard/safetensors_writer.h"
#include "ckptguard/verify.h"
#include "print_types.h"
#include "test_util.h"

namespace ckptguard {
namespace {

using nlohmann::json;
using testing::CorpusDir;
using testing::ShellQuote;
using testing::TempDir;
namespace fs = std::filesystem;

testing::CommandResult Convert(const std::string& args) {
  return testing::Run(ShellQuote(CKPTGUARD_CLI) + " convert " + args + " 2>&1");
}

json Describe(const std::string& path) {
  Result<Checkpoint> ckpt = LoadCheckpoint(path);
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), path << ": " << (ckpt ? "" : ckpt.error().ToString()));
  return json::parse(*ckpt->DescribeJson());
}

// Digests by key, without the fields a format cannot keep (strides of views
// become contiguous, Parameter-ness is not in safetensors).
std::map<std::string, std::string> Digests(const json& described) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : described.at("tensors").items()) {
    out[k] = v.at("dtype").get<std::string>() + " " + v.at("shape").dump() + " " + v.at("sha256").get<std::string>();
  }
  return out;
}

bool TempFilesIn(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().find(".tmp-") != std::string::npos) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// AtomicFile.

BOOST_AUTO_TEST_CASE(a_failure_at_any_step_leaves_the_old_file) {
  TempDir dir;
  const std::string path = dir.Write("out.bin", "the old file");
  const std::string fresh(100000, 'n');
  const std::pair<AtomicFileStep, uint32_t> steps[] = {
      {AtomicFileStep::kCreate, 1}, {AtomicFileStep::kWrite, 1}, {AtomicFileStep::kWrite, 2},
      {AtomicFileStep::kFsync, 1},  {AtomicFileStep::kRename, 1}};
  for (const auto& [step, nth] : steps) {
    BOOST_TEST_CONTEXT("step " << static_cast<int>(step) << " write " << nth) {
      SetAtomicFileFailureForTesting(step, ENOSPC, nth);
      Status s = [&]() -> Status {
        CKG_ASSIGN_OR_RETURN(AtomicFile f, AtomicFile::Create(path));
        CKG_TRY(f.Write(AsBytes(fresh.substr(0, 50000))));
        CKG_TRY(f.Write(AsBytes(fresh.substr(50000))));
        return f.Commit();
      }();
      SetAtomicFileFailureForTesting(AtomicFileStep::kNone, 0);
      BOOST_REQUIRE(!s.has_value());
      BOOST_TEST(s.error().code == ErrorCode::kIo);
      BOOST_TEST(s.error().detail.find("No space left on device") != std::string::npos, s.error().ToString());
      BOOST_TEST(testing::ReadFile(path) == "the old file");
      BOOST_TEST(!TempFilesIn(dir.path));
    }
  }
  // A failed folder sync happens after the rename: the new file is whole.
  SetAtomicFileFailureForTesting(AtomicFileStep::kFsyncDir, EIO);
  BOOST_TEST(!WriteFileAtomically(path, AsBytes(fresh)).has_value());
  SetAtomicFileFailureForTesting(AtomicFileStep::kNone, 0);
  BOOST_TEST(testing::ReadFile(path) == fresh);
  BOOST_TEST(!TempFilesIn(dir.path));
  // And without failures it simply replaces the file.
  BOOST_TEST(WriteFileAtomically(path, AsBytes(std::string("new"))).has_value());
  BOOST_TEST(testing::ReadFile(path) == "new");
}

BOOST_AUTO_TEST_CASE(an_abandoned_write_leaves_nothing) {
  TempDir dir;
  {
    Result<AtomicFile> f = AtomicFile::Create((dir.path / "never.pt").string());
    BOOST_REQUIRE(f.has_value());
    BOOST_TEST(f->Write(AsBytes(std::string("partial"))).has_value());
  }
  BOOST_TEST(fs::is_empty(dir.path));
  BOOST_TEST(!AtomicFile::Create("/nonexistent/folder/x.pt").has_value());
}

// ---------------------------------------------------------------------------
// Safetensors writer.

BOOST_AUTO_TEST_CASE(safetensors_layout_and_independent_reader) {
  TempDir dir;
  const std::string path = (dir.path / "t.safetensors").string();
  std::deque<std::string> keep;  // stable addresses for the views
  std::vector<SafetensorsTensorData> tensors;
  auto add = [&](std::string name, DType dtype, std::vector<int64_t> shape) {
    uint64_t n = 1;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    std::string bytes(n * DTypeSize(dtype), '\0');
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 37 + name.size()) & 0xff);
    if (dtype == DType::kBool) {
      for (char& c : bytes) c = static_cast<char>(c & 1);
    }
    keep.push_back(std::move(bytes));
    tensors.push_back({std::move(name), dtype, std::move(shape), AsBytes(keep.back())});
  };
  add("b.f32", DType::kFloat32, {3, 4});
  add("a.f16", DType::kFloat16, {5});
  add("c.i64", DType::kInt64, {2, 2});
  add("d.u8", DType::kUInt8, {0, 3});
  add("e.bool", DType::kBool, {7});
  add("f.bf16", DType::kBFloat16, {});
  const Status written = WriteSafetensors(path, tensors, {{"format", "pt"}, {"note", "h\u00e9"}});
  BOOST_REQUIRE_MESSAGE(written.has_value(), (written ? std::string() : written.error().ToString()));
  const std::string bytes = testing::ReadFile(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  BOOST_TEST(header_len % 8 == 0u);
  BOOST_TEST(bytes[8] == '{');
  Result<SafetensorsFile> parsed = ParseSafetensors(AsBytes(bytes));
  BOOST_REQUIRE(parsed.has_value());
  BOOST_TEST(parsed->metadata.size() == 2u);
  // Larger dtypes first, then by name, as the reference writes.
  std::vector<std::string> order;
  for (const SafetensorsTensor& t : parsed->tensors) order.push_back(t.name);
  BOOST_TEST((order == std::vector<std::string>{"c.i64", "b.f32", "f.bf16", "a.f16", "d.u8", "e.bool"}));
  // numpy reads every tensor back to the same bytes.
  const std::string script =
      "import json,struct,sys,numpy as np\n"
      "b=open(sys.argv[1],'rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n])\n"
      "m={'F32':'<f4','F16':'<f2','I64':'<i8','U8':'u1','BOOL':'?','BF16':'<u2'}\n"
      "for k,v in h.items():\n"
      "  if k=='__metadata__': continue\n"
      "  s,e=v['data_offsets']; a=np.frombuffer(b[8+n+s:8+n+e],dtype=m[v['dtype']]).reshape(v['shape'])\n"
      "  print(k, a.shape, a.tobytes().hex())\n";
  const std::string script_path = dir.Write("read.py", script);
  const auto r = testing::Run(ShellQuote(CKPTGUARD_PYTHON) + " " + ShellQuote(script_path) + " " + ShellQuote(path));
  BOOST_REQUIRE(r.exit_code == 0);
  for (size_t i = 0; i < tensors.size(); ++i) {
    std::string hex;
    for (char c : keep[i]) {
      static const char* kDigits = "0123456789abcdef";
      hex += kDigits[static_cast<uint8_t>(c) >> 4];
      hex += kDigits[static_cast<uint8_t>(c) & 15];
    }
    BOOST_TEST(r.out.find(tensors[i].name + " ") != std::string::npos);
    BOOST_TEST(r.out.find(hex + "\n") != std::string::npos, tensors[i].name);
  }
}

BOOST_AUTO_TEST_CASE(safetensors_refusals_name_the_tensor) {
  TempDir dir;
  const std::string data(16, '\0');
  std::vector<SafetensorsTensorData> complex = {{"z", DType::kComplex128, {1}, AsBytes(data)}};
  Status s = WriteSafetensors((dir.path / "c.safetensors").string(), complex);
  BOOST_REQUIRE(!s.has_value());
  BOOST_TEST(s.error().detail.find("'z'") != std::string::npos);
  std::vector<SafetensorsTensorData> dup = {{"w", DType::kUInt8, {16}, AsBytes(data)},
                                            {"w", DType::kUInt8, {16}, AsBytes(data)}};
  BOOST_TEST(!WriteSafetensors((dir.path / "d.safetensors").string(), dup).has_value());
  std::vector<SafetensorsTensorData> wrong = {{"w", DType::kFloat32, {5}, AsBytes(data)}};
  BOOST_TEST(!WriteSafetensors((dir.path / "e.safetensors").string(), wrong).has_value());
  BOOST_TEST(fs::is_empty(dir.path));
}

// ---------------------------------------------------------------------------
// convert.

BOOST_AUTO_TEST_CASE(corpus_files_round_trip_with_identical_digests) {
  TempDir dir;
  for (const char* name : {"mlp.params", "mlp_full_checkpoint.pt", "mlp_legacy.pt", "mlp_full_legacy.pth",
                           "convnet_sgd.ckpt", "dtypes.pt", "views_and_sharing.pt", "parameters.pt", "containers.pt",
                           "torch2_layout_checkpoint.pt", "torch2_bigendian_dtypes.pt", "mlp.safetensors",
                           "arrays.npz"}) {
    BOOST_TEST_CONTEXT(name) {
      const std::string in = (CorpusDir() / "benign" / name).string();
      const json original = Describe(in);
      // To a torch zip: everything, values and all.
      const std::string pt = (dir.path / (std::string(name) + ".out.pt")).string();
      const auto r = Convert(ShellQuote(in) + " " + ShellQuote(pt));
      BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.out);
      const json back = Describe(pt);
      BOOST_TEST(Digests(back) == Digests(original));
      BOOST_TEST(back.at("skeleton") == original.at("skeleton"));
      BOOST_TEST(VerifyCheckpoint(pt).ok());
      // To safetensors: tensors (plain values kept as metadata).
      const std::string st = (dir.path / (std::string(name) + ".out.safetensors")).string();
      const auto s = Convert("--keep-metadata " + ShellQuote(in) + " " + ShellQuote(st));
      if (std::string(name) == "dtypes.pt" || std::string(name) == "torch2_bigendian_dtypes.pt") {
        BOOST_TEST(s.exit_code == 2);  // complex128 has no safetensors dtype
        BOOST_TEST(s.out.find("complex128") != std::string::npos, s.out);
        continue;
      }
      BOOST_REQUIRE_MESSAGE(s.exit_code == 0, s.out);
      std::map<std::string, std::string> want = Digests(original);
      const std::map<std::string, std::string> got = Digests(Describe(st));
      // Tied tensors are written once; the alias is in the metadata.
      for (auto it = want.begin(); it != want.end();) it = got.contains(it->first) ? std::next(it) : want.erase(it);
      BOOST_TEST(got == want);
      BOOST_TEST(got.size() + (std::string(name) == "views_and_sharing.pt" ? 1u : 0u) == Digests(original).size());
    }
  }
}

BOOST_AUTO_TEST_CASE(plain_values_are_refused_unless_kept) {
  TempDir dir;
  const std::string in = (CorpusDir() / "benign" / "mlp_full_checkpoint.pt").string();
  const std::string out = (dir.path / "x.safetensors").string();
  const auto refused = Convert(ShellQuote(in) + " " + ShellQuote(out));
  BOOST_TEST(refused.exit_code == 2);
  BOOST_TEST(refused.out.find("--keep-metadata") != std::string::npos, refused.out);
  BOOST_TEST(!fs::exists(out));
  const auto model = Convert("--prefix model " + ShellQuote(in) + " " + ShellQuote(out));
  BOOST_TEST(model.exit_code == 0, model.out);
  BOOST_TEST(Digests(Describe(out)).size() == 4u);
  const auto bad = Convert(ShellQuote(in) + " " + ShellQuote((dir.path / "x.weird").string()));
  BOOST_TEST(bad.exit_code == 2);
  BOOST_TEST(bad.out.find("--to") != std::string::npos);
  const auto hostile =
      Convert(ShellQuote((CorpusDir() / "malicious" / "torch_zip_injected.pt").string()) + " " + ShellQuote(out));
  BOOST_TEST(hostile.exit_code == 2);
  BOOST_TEST(hostile.out.find("os.system") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(converted_full_checkpoint_loads_in_torch) {
  TempDir dir;
  const std::string in = (CorpusDir() / "benign" / "mlp_full_checkpoint.pt").string();
  const std::string out = (dir.path / "resaved.pt").string();
  BOOST_REQUIRE(Convert(ShellQuote(in) + " " + ShellQuote(out)).exit_code == 0);
  // torch 1.13's weights_only refuses floats (every optimizer state): the
  // interop helper's restricted unpickler allows torch's own list plus them.
  const auto r = testing::Run(ShellQuote(CKPTGUARD_PYTHON) + " " +
                              ShellQuote(std::string(CKPTGUARD_SOURCE_DIR) + "/tests/interop/describe_with_torch.py") +
                              " --loader restricted " + ShellQuote(out) + " 2>&1");
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.out);
  const json torch_view = json::parse(r.out);
  const json expect = json::parse(testing::ReadFile(CorpusDir() / "benign" / "mlp_full_checkpoint.pt.expect.json"));
  BOOST_TEST(torch_view.at("tensors") == expect.at("tensors"));
  BOOST_TEST(torch_view.at("skeleton") == expect.at("skeleton"));
  // And the safetensors of its model back to .pt loads with weights_only.
  const std::string st = (dir.path / "model.safetensors").string();
  const std::string pt = (dir.path / "model.pt").string();
  BOOST_REQUIRE(Convert("--prefix model " + ShellQuote(in) + " " + ShellQuote(st)).exit_code == 0);
  BOOST_REQUIRE(Convert(ShellQuote(st) + " " + ShellQuote(pt)).exit_code == 0);
  const auto w = testing::Run(ShellQuote(CKPTGUARD_PYTHON) + " " +
                              ShellQuote(std::string(CKPTGUARD_SOURCE_DIR) + "/tests/interop/describe_with_torch.py") +
                              " " + ShellQuote(pt) + " 2>&1");
  BOOST_REQUIRE_MESSAGE(w.exit_code == 0, w.out);
  const json model_view = json::parse(w.out);  // a named value: items() views it
  for (const auto& [k, v] : model_view.at("tensors").items()) {
    BOOST_TEST(v.at("sha256") == expect.at("tensors").at("model." + k).at("sha256"), k);
  }
}

BOOST_AUTO_TEST_CASE(a_model_rebuilt_from_written_weights_gives_torchs_output_bit_for_bit) {
  // The seed's check: the state dict written by ckptguard (through safetensors
  // and back to a torch zip), loaded into the MLP class by torch, gives
  // exactly the output torch recorded for the original weights.
  TempDir dir;
  const std::string st = (dir.path / "mlp.safetensors").string();
  const std::string pt = (dir.path / "mlp.pt").string();
  BOOST_REQUIRE(Convert(ShellQuote((CorpusDir() / "benign" / "mlp.params").string()) + " " + ShellQuote(st)).exit_code == 0);
  BOOST_REQUIRE(Convert(ShellQuote(st) + " " + ShellQuote(pt)).exit_code == 0);
  const std::string script = dir.Write("mlp.py",
      "import sys, torch\n"
      "from torch import nn\n"
      "from torch.nn import functional as F\n"
      "class MLP(nn.Module):\n"
      "    def __init__(self):\n"
      "        super().__init__()\n"
      "        self.hidden = nn.Linear(20, 256)\n"
      "        self.output = nn.Linear(256, 10)\n"
      "    def forward(self, x):\n"
      "        return self.output(F.relu(self.hidden(x)))\n"
      "net = MLP()\n"
      "net.load_state_dict(torch.load(sys.argv[1], weights_only=True))\n"
      "x = torch.load(sys.argv[2], weights_only=True)\n"
      "y = torch.load(sys.argv[3], weights_only=True)\n"
      "with torch.no_grad():\n"
      "    out = net(x)\n"
      "print('identical' if torch.equal(out, y) else 'different', float((out - y).abs().max()))\n");
  const auto r = testing::Run(ShellQuote(CKPTGUARD_PYTHON) + " " + ShellQuote(script) + " " + ShellQuote(pt) + " " +
                              ShellQuote((CorpusDir() / "benign" / "mlp_input.pt").string()) + " " +
                              ShellQuote((CorpusDir() / "benign" / "mlp_output.pt").string()) + " 2>&1");
  BOOST_TEST(r.exit_code == 0, r.out);
  BOOST_TEST(r.out.starts_with("identical"), r.out);
}

BOOST_AUTO_TEST_CASE(kill_9_during_a_conversion_never_leaves_a_wrong_file) {
  TempDir dir;
  // A checkpoint big enough that writing it takes a while: made by torch.
  const std::string big = (dir.path / "big.pt").string();
  const auto made = testing::Run(ShellQuote(CKPTGUARD_PYTHON) + " -c 'import torch,sys; torch.manual_seed(0); "
                                 "torch.save({f\"w{i}\": torch.randn(512, 1024) for i in range(24)}, sys.argv[1])' " +
                                 ShellQuote(big));
  BOOST_REQUIRE(made.exit_code == 0);
  const json want = Describe(big);
  const std::string out = (dir.path / "out.safetensors").string();
  int finished = 0, killed = 0;
  for (int delay_ms : {1, 5, 15, 30, 60, 120}) {
    const pid_t pid = fork();
    BOOST_REQUIRE(pid >= 0);
    if (pid == 0) {
      const int null_fd = open("/dev/null", O_WRONLY);
      dup2(null_fd, 1);
      execl(CKPTGUARD_CLI, CKPTGUARD_CLI, "convert", big.c_str(), out.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    (WIFSIGNALED(status) ? killed : finished)++;
    // Either no file, or a whole one with exactly the right tensors.
    if (fs::exists(out)) {
      BOOST_TEST(VerifyCheckpoint(out).ok(), "after " << delay_ms << " ms");
      BOOST_TEST(Digests(Describe(out)) == Digests(want));
      fs::remove(out);
    }
    for (const auto& e : fs::directory_iterator(dir.path)) {
      if (e.path().filename().string().find(".tmp-") != std::string::npos) fs::remove(e.path());  // left by the kill
    }
  }
  BOOST_TEST_MESSAGE("killed " << killed << ", finished " << finished);
  BOOST_TEST(killed > 0);
}

}  // namespace
}  // namespace ckptguard
