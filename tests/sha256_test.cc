// lib/sha256.h: the one SHA-256 every component uses.
#define BOOST_TEST_MODULE sha256_test
#include "ckptguard/sha256.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <string>

#include "test_util.h"

using namespace ckptguard;

namespace {
const std::string kAbc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const std::string kEmpty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
// FIPS 180-2 appendix B.2, 448 bits.
const std::string kTwoBlocks = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
const std::string kTwoBlocksText = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
}  // namespace

BOOST_AUTO_TEST_CASE(known_vectors_one_shot_and_streamed) {
  BOOST_TEST(Sha256Hex("abc") == kAbc);
  BOOST_TEST(Sha256Hex("") == kEmpty);
  BOOST_TEST(Sha256Hex(kTwoBlocksText) == kTwoBlocks);
  for (size_t split = 0; split <= kTwoBlocksText.size(); ++split) {
    Sha256 hash;
    hash.Update(std::string_view(kTwoBlocksText).substr(0, split));
    hash.Update(std::string_view(kTwoBlocksText).substr(split));
    BOOST_TEST(hash.size() == kTwoBlocksText.size());
    auto hex = hash.FinishHex();
    BOOST_REQUIRE(hex.has_value());
    BOOST_TEST(*hex == kTwoBlocks, "split at " << split);
  }
}

BOOST_AUTO_TEST_CASE(finish_twice_fails_and_moves_keep_state) {
  Sha256 a;
  a.Update(std::string_view("ab"));
  Sha256 b = std::move(a);
  b.Update(std::string_view("c"));
  auto hex = b.FinishHex();
  BOOST_REQUIRE(hex.has_value());
  BOOST_TEST(*hex == kAbc);
  auto again = b.FinishHex();
  BOOST_REQUIRE(!again.has_value());
  BOOST_TEST((again.error().code == ErrorCode::kInternal));
}

BOOST_AUTO_TEST_CASE(hex_lower) {
  BOOST_TEST(HexLower(std::string("\x00\x0f\xf0\xff", 4)) == "000ff0ff");
  BOOST_TEST(HexLower("") == "");
}

BOOST_AUTO_TEST_CASE(files_and_descriptors) {
  testing::TempDir dir;
  std::string big(3 * (1 << 20) + 17, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 + 7);
  const std::string path = dir.Write("big", big);
  auto from_file = Sha256FileHex(path);
  BOOST_REQUIRE(from_file.has_value());
  BOOST_TEST(*from_file == Sha256Hex(big));
  BOOST_TEST(*Sha256FileHex(dir.Write("abc", "abc")) == kAbc);
  // From where the descriptor stands.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  BOOST_REQUIRE(fd >= 0);
  BOOST_REQUIRE(::lseek(fd, 1000, SEEK_SET) == 1000);
  auto rest = Sha256FdHex(fd, "big");
  ::close(fd);
  BOOST_REQUIRE(rest.has_value());
  BOOST_TEST(*rest == Sha256Hex(std::string_view(big).substr(1000)));
  auto missing = Sha256FileHex((dir.path / "missing").string());
  BOOST_REQUIRE(!missing.has_value());
  BOOST_TEST((missing.error().code == ErrorCode::kIo));
  BOOST_TEST(missing.error().where.find("missing") != std::string::npos);
}
