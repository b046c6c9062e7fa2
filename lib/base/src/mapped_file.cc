#include "ckptguard/mapped_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <utility>

namespace ckptguard {
namespace {

// The guard table: one slot per live mapping, read by the SIGBUS handler.
// Only atomics, so the handler never takes a lock and never allocates; a slot
// is claimed with a compare-and-swap and published (state kLive) only after
// its range is stored, and retired (state kFree) before the range is unmapped.
constexpr int kMaxMaps = 4096;
// Files up to this size are mapped with MAP_POPULATE (Open).
constexpr size_t kPopulateMaxBytes = size_t{32} << 20;
enum SlotState : uint32_t { kFree = 0, kClaimed = 1, kLive = 2 };

struct GuardSlot {
  std::atomic<uint32_t> state{kFree};
  std::atomic<uintptr_t> begin{0};
  std::atomic<uintptr_t> end{0};  // page-rounded
  std::atomic<uint32_t> faults{0};
  std::atomic<int> prot{PROT_READ};  // the mapping's protection, kept by the zero pages
};

GuardSlot g_slots[kMaxMaps];
std::atomic<uintptr_t> g_page_size{4096};
struct sigaction g_previous {};

// CallPrevious hands the signal to the handler we replaced; false when there
// is none to call (SIG_DFL, or SIG_IGN for a real fault, which cannot be
// ignored: returning would fault again).
bool CallPrevious(int sig, siginfo_t* info, void* context) {
  if ((g_previous.sa_flags & SA_SIGINFO) != 0) {
    if (g_previous.sa_sigaction == nullptr) return false;
    g_previous.sa_sigaction(sig, info, context);
    return true;
  }
  if (g_previous.sa_handler == SIG_DFL) return false;
  if (g_previous.sa_handler == SIG_IGN) return info == nullptr || info->si_code <= 0;  // kill(): ignored, as asked
  g_previous.sa_handler(sig);
  return true;
}

void ChainToPrevious(int sig, siginfo_t* info, void* context) {
  if (CallPrevious(sig, info, context)) return;
  // No previous handler: the default action, as if we had never been here.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGBUS, &dfl, nullptr);
  ::raise(SIGBUS);  // pending until the handler returns, then fatal
}

// OnSigbus: a read of one of our mappings touched a page past the end of a
// file that shrank. Replace that page and the rest of the mapping with zero
// pages (one signal per mapping, not per page), count the fault and return:
// the read is retried and sees zeros. Anything else goes to the previous
// handler. Async-signal-safe: atomics, mmap, sigaction and raise only.
void OnSigbus(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  const uintptr_t addr = info != nullptr ? reinterpret_cast<uintptr_t>(info->si_addr) : 0;
  const uintptr_t page = g_page_size.load(std::memory_order_relaxed);
  if (addr != 0 && info->si_code > 0) {
    for (GuardSlot& slot : g_slots) {
      if (slot.state.load(std::memory_order_acquire) != kLive) continue;
      const uintptr_t begin = slot.begin.load(std::memory_order_relaxed);
      const uintptr_t end = slot.end.load(std::memory_order_relaxed);
      if (addr < begin || addr >= end) continue;
      const uintptr_t start = addr & ~(page - 1);
      void* r = ::mmap(reinterpret_cast<void*>(start), end - start, slot.prot.load(std::memory_order_relaxed),
                       MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (r == MAP_FAILED) break;
      slot.faults.fetch_add(1, std::memory_order_relaxed);
      errno = saved_errno;
      return;
    }
  }
  errno = saved_errno;
  ChainToPrevious(sig, info, context);
}

// EnsureHandler runs at every map (one sigaction query): it installs
// OnSigbus when it is not the current SIGBUS handler, chaining to whatever is.
// Not only once: a runtime that saves and later restores handlers around a
// region (a test framework's signal monitor) would otherwise silently
// uninstall it. The first call comes late enough that a sanitizer runtime has
// installed its own handler, which becomes the one we chain to.
void EnsureHandler() {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  struct sigaction current {};
  if (::sigaction(SIGBUS, nullptr, &current) != 0) return;
  if ((current.sa_flags & SA_SIGINFO) != 0 && current.sa_sigaction == OnSigbus) return;
  const long page = ::sysconf(_SC_PAGESIZE);
  if (page > 0) g_page_size.store(static_cast<uintptr_t>(page), std::memory_order_relaxed);
  g_previous = current;
  struct sigaction sa {};
  sa.sa_sigaction = OnSigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, nullptr);
}

int ClaimSlot(uintptr_t begin, uintptr_t end, int prot) {
  for (int i = 0; i < kMaxMaps; ++i) {
    uint32_t expected = kFree;
    if (!g_slots[i].state.compare_exchange_strong(expected, kClaimed, std::memory_order_acquire)) continue;
    g_slots[i].begin.store(begin, std::memory_order_relaxed);
    g_slots[i].end.store(end, std::memory_order_relaxed);
    g_slots[i].prot.store(prot, std::memory_order_relaxed);
    g_slots[i].faults.store(0, std::memory_order_relaxed);
    g_slots[i].state.store(kLive, std::memory_order_release);
    return i;
  }
  return -1;
}

void ReleaseSlot(int i) {
  if (i < 0) return;
  g_slots[i].state.store(kFree, std::memory_order_release);
}

size_t RoundUp(size_t n) {
  const size_t page = g_page_size.load(std::memory_order_relaxed);
  return (n + page - 1) & ~(page - 1);
}

}  // namespace

Result<MappedFile> MappedFile::Open(const std::string& path, const MappedFileOptions& options) {
  auto io_error = [&](const char* what, int err) {
    return MakeError(ErrorCode::kIo, 0, std::string(what) + ": " + std::strerror(err), path);
  };
  CKG_ASSIGN_OR_RETURN(InputFile file, OpenInputFile(path));
  MappedFile out;
  out.path_ = path;
  out.mode_ = options.mode;
  const uint64_t size = static_cast<uint64_t>(file.identity().size);
  if (options.mode == MapMode::kRead) {
    if (size > options.max_read_len) {
      auto err = MakeError(ErrorCode::kLimitExceeded, 0,
                           "file of " + std::to_string(size) + " bytes is over max_read_len " +
                               std::to_string(options.max_read_len),
                           path);
      err.error().limit = "max_read_len";
      return err;
    }
    out.size_ = static_cast<size_t>(size);
    if (out.size_ > 0) {
      // Anonymous memory, made read-only once filled: the same lifetime rules
      // (and the same munmap) as a file map, never a SIGBUS.
      void* addr = ::mmap(nullptr, out.size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (addr == MAP_FAILED) {
        return MakeError(ErrorCode::kLimitExceeded, 0, "cannot allocate " + std::to_string(size) + " bytes to read",
                         path);
      }
      out.addr_ = addr;
      out.map_len_ = out.size_;
      size_t done = 0;
      while (done < out.size_) {
        const ssize_t n = ::pread(file.fd(), static_cast<char*>(addr) + done, out.size_ - done,
                                  static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return io_error("cannot read", errno);
        if (n == 0) return ChangedWhileReading(path, "it shrank");
        done += static_cast<size_t>(n);
      }
      ::mprotect(addr, out.size_, PROT_READ);
    }
    CKG_TRY(file.CheckUnchanged());
    if (options.after_open) options.after_open(path);
    return out;  // the descriptor closes: nothing later can change these bytes
  }
  if (size > SIZE_MAX) return MakeError(ErrorCode::kLimitExceeded, 0, "file too large to map", path);
  out.size_ = static_cast<size_t>(size);
  if (out.size_ > 0) {
    EnsureHandler();
    const int prot = options.copy_on_write ? PROT_READ | PROT_WRITE : PROT_READ;
    // A small file is read whole by any load or scan (a zip's local headers
    // sit between its records): its page table is filled in one call instead
    // of a page fault per few pages (costly where faults exit to a
    // hypervisor). A large one is mapped lazily: its tensors may never be read.
    const int populate = out.size_ <= kPopulateMaxBytes ? MAP_POPULATE : 0;
    void* addr = ::mmap(nullptr, out.size_, prot, MAP_PRIVATE | populate, file.fd(), 0);
    if (addr == MAP_FAILED) return io_error("cannot map", errno);
    out.addr_ = addr;
    out.map_len_ = out.size_;
    const uintptr_t begin = reinterpret_cast<uintptr_t>(addr);
    out.slot_ = ClaimSlot(begin, begin + RoundUp(out.size_), prot);
    if (out.slot_ < 0) {
      auto err = MakeError(ErrorCode::kLimitExceeded, 0,
                           "more than " + std::to_string(kMaxMaps) + " files mapped at once (max_maps)", path);
      err.error().limit = "max_maps";
      return err;  // `out` unmaps
    }
  }
  out.file_ = std::move(file);
  if (options.after_open) options.after_open(path);
  return out;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : addr_(std::exchange(other.addr_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      map_len_(std::exchange(other.map_len_, 0)),
      slot_(std::exchange(other.slot_, -1)),
      mode_(other.mode_),
      file_(std::move(other.file_)),
      path_(std::move(other.path_)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    Reset();
    addr_ = std::exchange(other.addr_, nullptr);
    size_ = std::exchange(other.size_, 0);
    map_len_ = std::exchange(other.map_len_, 0);
    slot_ = std::exchange(other.slot_, -1);
    mode_ = other.mode_;
    file_ = std::move(other.file_);
    path_ = std::move(other.path_);
  }
  return *this;
}

MappedFile::~MappedFile() { Reset(); }

void MappedFile::Reset() {
  // Retire the slot first: once the range is unmapped it may be reused by
  // another mapping, whose faults are not ours to patch.
  ReleaseSlot(std::exchange(slot_, -1));
  if (addr_ != nullptr) ::munmap(addr_, map_len_);
  addr_ = nullptr;
  size_ = 0;
  map_len_ = 0;
  file_ = InputFile();
}

bool MappedFile::faulted() const {
  return slot_ >= 0 && g_slots[slot_].faults.load(std::memory_order_relaxed) > 0;
}

Status MappedFile::CheckUnchanged() const {
  if (mode_ == MapMode::kRead) return OkStatus();
  if (faulted()) return ChangedWhileReading(path_, "it shrank under the memory map");
  return file_.CheckUnchanged();
}

void MappedFile::AdviseRandom() const {
  if (addr_ != nullptr && size_ > 0 && mode_ == MapMode::kMap) ::madvise(addr_, size_, MADV_RANDOM);
}

void MappedFile::DropResident() const {
  if (addr_ != nullptr && size_ > 0 && mode_ == MapMode::kMap) ::madvise(addr_, size_, MADV_DONTNEED);
}

}  // namespace ckptguard
