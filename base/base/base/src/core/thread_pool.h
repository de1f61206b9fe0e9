// A fixed pool of worker threads for data-parallel loops.
//
// parallel_for splits [0, n) into contiguous chunks, one per thread (the
// calling thread takes part), and returns when all are done. Calls must not
// nest and must come from one thread at a time (the session's thread).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace longkv {

class ThreadPool {
 public:
  // n_threads <= 0 means all hardware threads.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // fn(begin, end, thread_index) over a static partition of [0, n); chunk
  // boundaries are multiples of `grain` (except the last).
  using RangeFn = std::function<void(int64_t begin, int64_t end, int thread)>;
  void parallel_for(int64_t n, const RangeFn& fn, int64_t grain = 1);

  // fn(thread_index) once on every thread.
  void run_on_all(const std::function<void(int thread)>& fn);

 private:
  void worker(int index);

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  // Decode issues ~100 short parallel loops per token, so waking sleeping
  // threads through the kernel on each would dominate small models: workers
  // and the caller spin briefly on these atomics before blocking on the
  // condition variables.
  std::mutex mu_;
  std::condition_variable cv_start_, cv_done_;
  const std::function<void(int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace longkv
