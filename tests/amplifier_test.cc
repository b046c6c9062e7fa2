// The amplifiers of issue 13 (tests/amplifiers.h), each built byte by byte:
// scan and load end with a correct answer or an error naming the limit, and
// the CLI's peak memory stays bounded (the sanitizer build's RSS, so the
// bound is loose: it catches the gigabytes these files used to cost).
#define BOOST_TEST_MODULE amplifier_test
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include "amplifiers.h"
#include "ckptguard/checkpoint.h"
#include "ckptguard/container.h"
#include "ckptguard/scanner/scan.h"
#include "test_util.h"

namespace ckptguard {
namespace {

using testing::TempDir;

Bytes AsBytes(const std::string& s) { return Bytes(reinterpret_cast<const uint8_t*>(s.data()), s.size()); }

// Peak RSS a CLI run may reach here. ASan's shadow and allocator caches add
// tens of MB to the real figure; every amplifier used to take 300 MB to 4 GB.
constexpr long kMaxRssKb = 256 * 1024;

struct Measured {
  int exit_code = -1;
  long max_rss_kb = 0;
  std::string out;
};

// RunMeasured runs the CLI with `args`, stdout to a file, and reports its
// exit code and peak RSS. The CLI is started by a small Python process (the
// kernel counts a child's peak from the memory of whoever forked it, and
// this test process is large), which reports the child's rusage.
Measured RunMeasured(const std::vector<std::string>& args, const TempDir& dir) {
  const std::string out_path = (dir.path / "stdout.txt").string();
  const std::string stats_path = (dir.path / "stats.txt").string();
  std::string command = testing::ShellQuote(CKPTGUARD_PYTHON) + " -c " +
                        testing::ShellQuote(
                            "import resource, subprocess, sys\n"
                            "with open(sys.argv[2], 'wb') as out:\n"
                            "    rc = subprocess.run(sys.argv[3:], stdout=out, stderr=subprocess.DEVNULL).returncode\n"
                            "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
                            "open(sys.argv[1], 'w').write('%d %d' % (rc if rc >= 0 else 128 - rc, rss))\n") +
                        " " + testing::ShellQuote(stats_path) + " " + testing::ShellQuote(out_path) + " " +
                        testing::ShellQuote(CKPTGUARD_CLI);
  for (const std::string& a : args) command += " " + testing::ShellQuote(a);
  Measured m;
  if (std::system(command.c_str()) != 0) return m;
  std::ifstream stats(stats_path);
  stats >> m.exit_code >> m.max_rss_kb;
  std::ifstream in(out_path, std::ios::binary);
  m.out.assign(std::istreambuf_iterator<char>(in), {});
  return m;
}

// CheckCli scans and inspects `bytes` as a file: both end by exit (never a
// signal), within the memory bound, and return the reports.
std::pair<Measured, Measured> CheckCli(const std::string& name, const std::string& bytes) {
  TempDir dir;
  const std::string path = dir.Write(name, bytes);
  Measured scan = RunMeasured({"scan", "--format", "json", path}, dir);
  BOOST_TEST(scan.exit_code <= 2, name << ": scan exit " << scan.exit_code);
  BOOST_TEST(scan.max_rss_kb < kMaxRssKb, name << ": scan peak RSS " << scan.max_rss_kb << " KB");
  Measured inspect = RunMeasured({"inspect", "--json", path}, dir);
  BOOST_TEST(inspect.exit_code <= 2, name << ": inspect exit " << inspect.exit_code);
  BOOST_TEST(inspect.max_rss_kb < kMaxRssKb, name << ": inspect peak RSS " << inspect.max_rss_kb << " KB");
  // One JSON document whatever the answer: the file's object, or its error.
  const nlohmann::json doc = nlohmann::json::parse(inspect.out, nullptr, false);
  BOOST_TEST(!doc.is_discarded(), name << ": inspect --json is not one JSON document");
  if (!doc.is_discarded()) {
    BOOST_TEST(doc.at("files").size() == 1u, name);
    BOOST_TEST(doc.at("files").at(0).contains("error") == (inspect.exit_code != 0), name);
  }
  return {scan, inspect};
}

BOOST_AUTO_TEST_CASE(NestedSharedZipIsOpenedOncePerMember) {
  const std::string zip = testing::NestedSharedZip();
  BOOST_TEST(zip.size() < 16'000u);
  // Each level's 32 names share one member: one nested container per level.
  const Container c = OpenContainer(AsBytes(zip));
  size_t containers = 0, shared = 0;
  ForEachContainer(c, [&](const Container& inner, const std::string&) {
    ++containers;
    for (const Anomaly& a : inner.anomalies) shared += a.kind == "zip.shared_data" ? 1 : 0;
  });
  BOOST_TEST(containers == 5u);     // the file and four levels
  BOOST_TEST(shared == 4u * 31u);   // every other name says it is read once
  // The scanner still reads the payload pickle at the bottom.
  const scanner::FileReport report = scanner::ScanBytes(AsBytes(zip), "nested.zip");
  BOOST_TEST((report.verdict != scanner::Verdict::kError));
  auto [scan, inspect] = CheckCli("nested.zip", zip);
  BOOST_TEST(scan.out.find("zip.shared_data") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(NestedContainersAreCountedPerFile) {
  // Distinct members (no sharing): the per-file count of nested containers
  // bounds the fan-out instead.
  std::string inner = testing::BuildZip({testing::ZipItem{"p.pkl", std::string("\x80\x02N.", 4)}});
  std::vector<testing::ZipItem> items;
  for (int i = 0; i < 300; ++i) items.push_back(testing::ZipItem{"z" + std::to_string(i) + ".zip", inner + std::string(i, ' ')});
  const std::string outer = testing::BuildZip(items);
  const Container c = OpenContainer(AsBytes(outer));
  BOOST_TEST(c.nested.size() == 256u);  // ContainerLimits::max_nested
  BOOST_TEST(std::any_of(c.anomalies.begin(), c.anomalies.end(),
                         [](const Anomaly& a) { return a.kind == "container.too_many"; }));
}

BOOST_AUTO_TEST_CASE(NonePopPairsAreNotBufferedBySniffing) {
  const std::string pkl = testing::NonePopPickle();
  BOOST_TEST(pkl.size() > 4'000'000u);
  const Container c = OpenContainer(AsBytes(pkl));
  BOOST_TEST((c.format == ContainerFormat::kPickle));
  BOOST_TEST(!c.error);
  // A correct answer: the pickle is None, and safe.
  const scanner::FileReport report = scanner::ScanBytes(AsBytes(pkl), "nonepop.pkl");
  BOOST_TEST((report.verdict == scanner::Verdict::kSafe));
  Result<Checkpoint> ckpt = LoadCheckpointBytes(AsBytes(pkl));
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), (ckpt ? std::string() : ckpt.error().ToString()));
  BOOST_TEST((ckpt->values().Get(ckpt->root()).kind == ValueKind::kNone));
  CheckCli("nonepop.pkl", pkl);
}

BOOST_AUTO_TEST_CASE(LegacyDetectionStillSeesTheSecondPickleAfterALongFirst) {
  // A hostile first pickle in the magic number's place, then the protocol
  // version 1001: still the legacy format (torch runs the first pickle).
  std::string first("\x80\x02", 2);
  for (int i = 0; i < 1000; ++i) first += "N0";
  first += "N.";
  const std::string second("\x80\x02M\xe9\x03.", 6);  // BININT2 1001
  BOOST_TEST(LooksLikeTorchLegacy(AsBytes(first + second)));
  BOOST_TEST(!LooksLikeTorchLegacy(AsBytes(first + first)));
}

BOOST_AUTO_TEST_CASE(SparseMemoKeysAreChargedTheirFootprint) {
  const std::string pkl = testing::SparseMemoPickle();
  BOOST_TEST(pkl.size() < 400'000u);
  auto [scan, inspect] = CheckCli("sparse_memo.pkl", pkl);
  // Either a correct answer (None) or an error naming a budget limit.
  BOOST_TEST((inspect.exit_code == 0 || inspect.out.find("max_") != std::string::npos), inspect.out.substr(0, 400));
}

BOOST_AUTO_TEST_CASE(InflateGrowsAsDataArrives) {
  const std::string zip = testing::HugeDeclaredEntryZip();
  Result<ZipArchive> archive = ZipArchive::Open(AsBytes(zip));
  BOOST_REQUIRE_MESSAGE(archive.has_value(), (archive ? std::string() : archive.error().ToString()));
  BOOST_TEST(archive->entries()[0].uncompressed_len == 0xfffffff0u);
  Budget budget;
  Result<std::string> data = archive->ReadEntry(archive->entries()[0], &budget);
  BOOST_REQUIRE(!data.has_value());
  BOOST_TEST(data.error().detail.find("deflate stream is corrupt") != std::string::npos, data.error().ToString());
  BOOST_TEST(budget.used(BudgetKind::kInflatedBytes) == 0u);
  CheckCli("huge_declared.pt", zip);
}

BOOST_AUTO_TEST_CASE(InflatedBytesAreBudgetedPerFile) {
  // 80 honest deflated members of 1 MiB of zeros each (~85 KB in all): within
  // every per-entry limit. With the file's inflate ratio set to 100, 80 MiB
  // is past its share: the members past it are reported, not read.
  std::vector<testing::ZipItem> items;
  for (int i = 0; i < 80; ++i) {
    testing::ZipItem item{"m" + std::to_string(i) + ".pkl", std::string("\x80\x02N.", 4) + std::string(1 << 20, '\0')};
    item.deflate = true;
    items.push_back(std::move(item));
  }
  const std::string zip = testing::BuildZip(items);
  BOOST_TEST(zip.size() < 200'000u);
  BudgetLimits limits;
  limits.inflate_per_file_byte = 100;
  limits.floor_bytes = 1 << 20;
  Budget budget(limits);
  const Container c = OpenContainer(AsBytes(zip), {}, &budget);
  BOOST_TEST(budget.used(BudgetKind::kInflatedBytes) <= budget.Limit(BudgetKind::kInflatedBytes));
  BOOST_TEST(budget.Limit(BudgetKind::kInflatedBytes) == 100 * zip.size() + (1 << 20));
  BOOST_TEST(std::any_of(c.anomalies.begin(), c.anomalies.end(), [](const Anomaly& a) {
    return a.kind == "zip.bad_entry" && a.detail.find("max_inflated_bytes") != std::string::npos;
  }));
  // The default budget reads them all (80 MiB < 1100 x 85 KB + 64 MiB).
  Budget defaults;
  const Container all = OpenContainer(AsBytes(zip), {}, &defaults);
  BOOST_TEST(defaults.used(BudgetKind::kInflatedBytes) == 80u * ((1u << 20) + 4));
  BOOST_TEST(all.pickles.size() == 80u);
  // The scanner with the same tight budget: not everything was read, so the
  // file is never "safe".
  scanner::ScanOptions options;
  options.budget = limits;
  const scanner::FileReport report = scanner::ScanBytes(AsBytes(zip), "many.zip", options);
  BOOST_TEST((report.verdict != scanner::Verdict::kSafe));
}

BOOST_AUTO_TEST_CASE(BroadcastViewsChargeTheirLogicalSize) {
  const std::string ckpt_bytes = testing::BroadcastViewCheckpoint();
  BOOST_TEST(ckpt_bytes.size() < 1024u);
  Result<Checkpoint> ckpt = LoadCheckpointBytes(AsBytes(ckpt_bytes));
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), (ckpt ? std::string() : ckpt.error().ToString()));
  BOOST_REQUIRE(ckpt->tensors().size() == 1u);
  BOOST_TEST(ckpt->tensors()[0].num_elements == (uint64_t{1} << 30));
  Result<std::string> digest = ckpt->Sha256Hex(0);
  BOOST_REQUIRE(!digest.has_value());
  BOOST_TEST(digest.error().limit == "max_view_bytes");
  BOOST_TEST(!ckpt->ContiguousBytes(0).has_value());
  // A small broadcast view is a correct answer.
  const std::string small_bytes = testing::BroadcastViewCheckpoint(1000);
  Result<Checkpoint> small = LoadCheckpointBytes(AsBytes(small_bytes));
  BOOST_REQUIRE(small.has_value());
  BOOST_TEST(small->Sha256Hex(0).has_value());
  auto [scan, inspect] = CheckCli("broadcast.pt", ckpt_bytes);
  BOOST_TEST(inspect.exit_code == 2);
  TempDir dir;
  const std::string in = dir.Write("broadcast.pt", ckpt_bytes);
  const Measured convert = RunMeasured({"convert", in, (dir.path / "out.safetensors").string()}, dir);
  BOOST_TEST(convert.exit_code == 2);
  BOOST_TEST(convert.max_rss_kb < kMaxRssKb);
  BOOST_TEST(!std::filesystem::exists(dir.path / "out.safetensors"));
}

BOOST_AUTO_TEST_CASE(BudgetLimitsAreFlags) {
  // The same limits from the command line: a tiny inflate budget refuses an
  // honest deflated checkpoint, naming the limit.
  std::vector<testing::ZipItem> items = testing::MinimalTorchZip();
  items[0].deflate = true;
  TempDir dir;
  const std::string path = dir.Write("deflated.pt", testing::BuildZip(items));
  const auto ok = testing::Run(testing::ShellQuote(CKPTGUARD_CLI) + " inspect " + testing::ShellQuote(path) + " 2>&1");
  BOOST_TEST(ok.exit_code == 0, ok.out);
  const auto refused = testing::Run(testing::ShellQuote(CKPTGUARD_CLI) + " inspect --max-inflated-bytes 10 " +
                                    testing::ShellQuote(path) + " 2>&1");
  BOOST_TEST(refused.exit_code == 2);
  BOOST_TEST(refused.out.find("max_inflated_bytes") != std::string::npos, refused.out);
}

}  // namespace
}  // namespace ckptguard
