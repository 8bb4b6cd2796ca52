/* emu.cpp — launches for emu.h: each CTA's threads join before the next
 * CTA starts; a thread that returns drops out of its barriers, as a GPU
 * thread that exits stops counting at __syncthreads. */
#include "emu.h"
thread_local emu_dim threadIdx, blockIdx;
emu_dim blockDim, gridDim;
emu_cta *emu_cur;
void emu_launch(unsigned grid, unsigned block, std::function<void()> f)
{
    blockDim = {block, 1, 1};
    gridDim = {grid, 1, 1};
    for (unsigned b = 0; b < grid; b++) {
        emu_cta cta;
        cta.all = std::make_unique<std::barrier<>>(block);
        for (unsigned w = 0; w < block / 32; w++) cta.warp.push_back(std::make_unique<std::barrier<>>(32));
        emu_cur = &cta;
        std::vector<std::thread> th;
        for (unsigned t = 0; t < block; t++)
            th.emplace_back([&, t, b] {
                threadIdx = {t, 0, 0};
                blockIdx = {b, 0, 0};
                f();
                cta.warp[t / 32]->arrive_and_drop();
                cta.all->arrive_and_drop();
            });
        for (auto &x : th) x.join();
    }
}
