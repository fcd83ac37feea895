// kafkajs 2.2.4 against esraft's Kafka listener. Run by kafka/kafkajs_test.go:
//   node check.js <broker> <topic>:<count>:<header value> ...
// where each topic was produced by another client (kcat, franz-go) with
// keys k0.., values v0.. and header h.
// Prints one line per check; exits non-zero on the first failure.
'use strict'
const { Kafka, logLevel } = require('kafkajs')

const [broker, ...produced] = process.argv.slice(2)
const kafka = new Kafka({ clientId: 'kafkajs-check', brokers: [broker], logLevel: logLevel.NOTHING })

function check (cond, what) {
  if (!cond) throw new Error('check failed: ' + what)
  console.log('ok ' + what)
}

function waitFor (cond, ms, what) {
  const deadline = Date.now() + ms
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (cond()) return resolve()
      if (Date.now() > deadline) return reject(new Error('timed out: ' + what))
      setTimeout(tick, 20)
    }
    tick()
  })
}

async function main () {
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic: 'js', numPartitions: 2 }, { topic: 'js-empty', numPartitions: 1 }] })
  await admin.disconnect()

  // A two-member group from the beginning: every record once, split.
  // The records are produced once both members hold partitions, so that
  // the first cannot read them all before the second joins.
  const got = new Map()
  const byMember = [new Set(), new Set()]
  const assigned = [[], []]
  const consumers = []
  for (let m = 0; m < 2; m++) {
    const c = kafka.consumer({ groupId: 'js-group', sessionTimeout: 6000, heartbeatInterval: 500, maxWaitTimeInMs: 200 })
    c.on(c.events.GROUP_JOIN, e => { assigned[m] = e.payload.memberAssignment.js || [] })
    await c.connect()
    await c.subscribe({ topic: 'js', fromBeginning: true })
    await c.run({
      eachMessage: async ({ partition, message }) => {
        byMember[m].add(partition)
        const k = message.key.toString()
        got.set(k, (got.get(k) || 0) + 1)
        if (message.headers.src.toString() !== 'kafkajs') throw new Error('header lost')
        if (message.value.toString() !== 'value-' + k.slice(4)) throw new Error('value changed')
      }
    })
    consumers.push(c)
  }
  await waitFor(() => assigned[0].length === 1 && assigned[1].length === 1, 30000, 'both members hold a partition')
  // Produce with keys and headers.
  const producer = kafka.producer()
  await producer.connect()
  const messages = []
  for (let i = 0; i < 40; i++) {
    messages.push({ key: 'key-' + i, value: 'value-' + i, headers: { n: String(i), src: 'kafkajs' } })
  }
  await producer.send({ topic: 'js', messages })
  await producer.disconnect()
  check(true, 'produced 40 keyed records with headers')

  await waitFor(() => got.size === 40, 30000, 'the group read 40 records')
  check([...got.values()].every(n => n === 1), 'the group read each record once')
  check(byMember[0].size > 0 && byMember[1].size > 0 && [...byMember[0]].every(p => !byMember[1].has(p)),
    'two members, each with its own partition')
  for (const c of consumers) await c.disconnect()

  // Seek: a consumer reads partition 0 from offset 2.
  const seeker = kafka.consumer({ groupId: 'js-seek', maxWaitTimeInMs: 200 })
  await seeker.connect()
  await seeker.subscribe({ topic: 'js', fromBeginning: true })
  const seen = []
  let seeked = false
  await seeker.run({
    eachMessage: async ({ partition, message }) => {
      if (partition === 0 && seeked) seen.push(Number(message.offset))
    }
  })
  seeker.seek({ topic: 'js', partition: 0, offset: '2' })
  seeked = true
  await waitFor(() => seen.length > 0, 15000, 'records after the seek')
  check(seen[0] === 2, 'seek to offset 2 reads offset 2 first (got ' + seen[0] + ')')
  await seeker.disconnect()

  // A long poll on an empty topic returns empty after maxWait.
  const idle = kafka.consumer({ groupId: 'js-idle', maxWaitTimeInMs: 1000 })
  const fetches = []
  idle.on(idle.events.FETCH, e => fetches.push(e.payload))
  await idle.connect()
  await idle.subscribe({ topic: 'js-empty', fromBeginning: true })
  let records = 0
  await idle.run({ eachMessage: async () => { records++ } })
  await waitFor(() => fetches.length >= 2, 15000, 'two fetches of the empty topic')
  const d = fetches[1].duration
  check(records === 0 && d >= 800 && d < 5000, 'an empty fetch waited about maxWait (1000 ms): ' + d + ' ms')
  await idle.disconnect()

  // Records other clients produced, read back with their keys and headers.
  for (const spec of produced) {
    const [topic, count, header] = spec.split(':')
    const reader = kafka.consumer({ groupId: 'js-read-' + topic, maxWaitTimeInMs: 200 })
    await reader.connect()
    await reader.subscribe({ topic, fromBeginning: true })
    const got = []
    await reader.run({
      eachMessage: async ({ message }) => {
        got.push(message.key.toString() + '=' + message.value.toString() + ';' + (message.headers.h ? message.headers.h.toString() : ''))
      }
    })
    await waitFor(() => got.length >= Number(count), 15000, 'the records of ' + topic)
    check(got.length === Number(count) && got.every((s, i) => s === 'k' + i + '=v' + i + ';' + header),
      'read ' + topic + ' in order with keys and headers: ' + got.slice(0, 2).join(' '))
    await reader.disconnect()
  }
}

main().then(() => process.exit(0), err => { console.error(err); process.exit(1) })
