//! Descriptors passed over a socket (SCM_RIGHTS): the numbers in a recvmsg's control data, or
//! in a recvmmsg batch's per-message chunks, as the kernel program copies them.

/// Descriptor numbers in the per-message chunks of a recvmmsg birth (see
/// `fdtrace_common::syscall::RECVMMSG`).
pub fn recvmmsg_fds(chunks: &[u8]) -> Vec<i32> {
    use fdtrace_common::syscall::{RECVMMSG_CHUNK, RECVMMSG_MSGS};
    let mut fds = Vec::new();
    for c in chunks.chunks_exact(RECVMMSG_CHUNK).take(RECVMMSG_MSGS) {
        let len = u64::from_ne_bytes(c[..8].try_into().unwrap()) as usize;
        let data = &c[8..];
        fds.extend(scm_rights_fds(&data[..len.min(data.len())]));
    }
    fds
}

/// Descriptor numbers in SCM_RIGHTS control messages (`struct cmsghdr` list, 8-byte aligned).
pub fn scm_rights_fds(control: &[u8]) -> Vec<i32> {
    const HDR: usize = 16;
    let mut fds = Vec::new();
    let mut off = 0;
    while off + HDR <= control.len() {
        let len = u64::from_ne_bytes(control[off..off + 8].try_into().unwrap()) as usize;
        let level = i32::from_ne_bytes(control[off + 8..off + 12].try_into().unwrap());
        let typ = i32::from_ne_bytes(control[off + 12..off + 16].try_into().unwrap());
        if len < HDR {
            break;
        }
        let end = off.saturating_add(len).min(control.len());
        if level == libc::SOL_SOCKET && typ == libc::SCM_RIGHTS {
            fds.extend(
                control[off + HDR..end]
                    .chunks_exact(4)
                    .map(|c| i32::from_ne_bytes(c.try_into().unwrap())),
            );
        }
        // A length past the buffer ends the list (and never loops: it always advances).
        match len
            .checked_next_multiple_of(8)
            .and_then(|l| off.checked_add(l))
        {
            Some(next) if next > off => off = next,
            _ => break,
        }
    }
    fds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control buffer with one SCM_RIGHTS message carrying `fds`.
    fn cmsg(fds: &[i32]) -> Vec<u8> {
        let len = 16 + 4 * fds.len();
        let mut b = (len as u64).to_ne_bytes().to_vec();
        b.extend_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        b.extend_from_slice(&libc::SCM_RIGHTS.to_ne_bytes());
        for fd in fds {
            b.extend_from_slice(&fd.to_ne_bytes());
        }
        b.resize(len.div_ceil(8) * 8, 0);
        b
    }

    #[test]
    fn scm_rights_descriptors_are_found() {
        assert_eq!(scm_rights_fds(&cmsg(&[5, 9])), vec![5, 9]);
        // Another control message first (SCM_CREDENTIALS, level SOL_SOCKET type 2).
        let mut creds = 28u64.to_ne_bytes().to_vec();
        creds.extend_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        creds.extend_from_slice(&2i32.to_ne_bytes());
        creds.resize(32, 0);
        creds.extend(cmsg(&[7]));
        assert_eq!(scm_rights_fds(&creds), vec![7]);
        // Cut or bogus buffers never panic.
        assert_eq!(scm_rights_fds(&cmsg(&[5])[..10]), Vec::<i32>::new());
        assert_eq!(scm_rights_fds(&[0xff; 40]), Vec::<i32>::new());
    }

    #[test]
    fn recvmmsg_chunks_are_read_per_message() {
        use fdtrace_common::syscall::RECVMMSG_CHUNK;
        let mut chunks = vec![0u8; 4 * RECVMMSG_CHUNK];
        for (i, fds) in [&[3, 4][..], &[][..], &[8][..]].iter().enumerate() {
            if fds.is_empty() {
                continue;
            }
            let c = cmsg(fds);
            let at = i * RECVMMSG_CHUNK;
            chunks[at..at + 8].copy_from_slice(&(c.len() as u64).to_ne_bytes());
            chunks[at + 8..at + 8 + c.len()].copy_from_slice(&c);
        }
        assert_eq!(recvmmsg_fds(&chunks), vec![3, 4, 8]);
        assert_eq!(recvmmsg_fds(&[0u8; 10]), Vec::<i32>::new());
    }
}
